"""`python -m recbole_tfllmer.leaderboard --config leaderboards/<name>.yaml [options]`.

Runs every cell of the leaderboard that has no finished cell file yet (same fingerprint),
each in a fresh Python process, then regenerates the summary from the cell files. Kill it
at any time and start it again: finished cells are skipped, a half-run cell continues from its
last evaluation (progress.py).
Several workers (processes, or machines sharing the results folder) can run at once: each
cell is claimed before it runs (`claims/`), and a claim whose process is gone is taken over.
"""

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recbole_tfllmer.leaderboard.spec import cell_matches, load_spec, parse_only
from recbole_tfllmer.leaderboard.store import CellStore, atomic_write_json


def ordered_cells(spec):
    """Seed-major order: all cells of the first seed first, so a partial run has whole seeds."""
    seeds = {s: i for i, s in enumerate(spec.seeds)}
    datasets = {d: i for i, d in enumerate(spec.datasets)}
    backbones = {b: i for i, b in enumerate(spec.backbones)}
    methods = {m: i for i, m in enumerate(spec.methods)}
    kinds = {k: i for i, k in enumerate(spec.vector_kinds)}
    return sorted(
        spec.cells(),
        key=lambda c: (
            datasets[c.dataset],
            seeds[c.seed],
            backbones[c.backbone],
            kinds.get(c.vectors, -1),
            methods[c.method],
        ),
    )


@dataclass
class QueueEntry:
    """One cell (or tuning trial) of a run: its record must carry `fingerprint`; a cell that
    exports a model is done only once its `artifacts` exist too, and one that `requires` a file
    waits until it exists (its source cell ran)."""

    cell_id: str
    fingerprint: str
    job_for: Callable
    artifacts: tuple = ()
    requires: Path = None
    source_id: str = None

    def done(self, store):
        return store.is_done(self.cell_id, self.fingerprint) and all(a.is_file() for a in self.artifacts)

    def ready(self):
        return self.requires is None or self.requires.is_file()


def still_needed_exports(spec, store):
    """cell -> the export kinds (item_table, checkpoint) a cell that will still run needs from it.

    A dependent that has its record needs nothing, unless it must itself run again for an export
    a cell still to run needs (A-LLMRec's S1 needs stage 1's table, stage 1 the RandInit
    checkpoint). So on a fresh machine a finished board, whose exports stayed behind in the old
    scratch, reruns nothing; one new dependent brings back exactly the chain it needs."""
    dependents = {c: [] for c in spec.cells()}
    for c in dependents:
        requirement = spec.collab_requirement(c)
        if requirement:
            dependents.setdefault(requirement[0], []).append((c, requirement[1]))
    runs = {}

    def will_run(c):
        if c not in runs:
            runs[c] = not store.is_done(c.cell_id, spec.fingerprint(c)) or any(
                will_run(d) and not spec.artifact_path(c, store.root, kind).is_file() for d, kind in dependents[c]
            )
        return runs[c]

    return {c: sorted({kind for d, kind in deps if will_run(d)}) for c, deps in dependents.items()}


def cell_entry(spec, cell, store, workdir, needed, threads=None):
    """The QueueEntry of a board cell; `needed` is still_needed_exports (computed once per board),
    so a finished cell counts as undone only for an export a cell still to run needs."""
    requirement = spec.collab_requirement(cell)
    exports = needed.get(cell, [])
    return QueueEntry(
        cell.cell_id,
        spec.fingerprint(cell),
        lambda: make_job(spec, cell, store, workdir, threads),
        artifacts=tuple(spec.artifact_path(cell, store.root, kind) for kind in exports),
        requires=spec.artifact_path(requirement[0], store.root, requirement[1]) if requirement else None,
        source_id=requirement[0].cell_id if requirement else None,
    )


def make_job(spec, cell, store, workdir, threads=None, cell_id=None):
    files, config = spec.cell_inputs(cell)
    requirement = spec.collab_requirement(cell)
    if requirement is not None:  # the source's exported model (a path on this machine: not in the fingerprint)
        source, kind, option = requirement
        config[option] = str(spec.artifact_path(source, store.root, kind))
    exports = set(spec.exports(cell))
    if (
        cell_id is None
        and cell.method == spec.collab_method
        and cell.backbone == spec.collab_backbone_of(cell.backbone)
    ):
        # a board cell that may be a collaborative source writes both, needed or not: a method added
        # to the board later (LLMEmb needs the table, A-LLMRec the checkpoint) then finds them instead
        # of forcing a re-run of an hours-long cell.  Only what a cell needs counts for `done`; tuning
        # trials (their own cell_id) export nothing.
        exports |= {"item_table", "checkpoint"}
    return {
        "replay": export_replay(store, cell.cell_id, spec.fingerprint(cell)) if cell_id is None else None,
        "leaderboard": spec.name,
        "cell_id": cell_id or cell.cell_id,
        "cell": cell.key(),
        "fingerprint": spec.fingerprint(cell),
        "config_files": files,
        "config_dict": config,
        "conditioning": spec.conditioning,
        "longtail": spec.longtail,
        "results_dir": str(store.root),
        "workdir": str(workdir),
        "threads": threads,
        "export_item_table": str(spec.artifact_path(cell, store.root)) if "item_table" in exports else None,
        "export_checkpoint": str(spec.artifact_path(cell, store.root, "checkpoint"))
        if "checkpoint" in exports
        else None,
    }


def export_replay(store, cell_id, fingerprint):
    """For a finished cell that runs again only for an export another cell needs: the recorded
    best epoch and validation curve the replay must reproduce (runner._Replay), or None."""
    if not store.is_done(cell_id, fingerprint):
        return None
    record = store.read(cell_id)
    best = record.get("best_epoch_loaded", record.get("best_epoch"))
    if best is None or not record.get("valid_scores"):
        return None
    return {"best_epoch": int(best), "valid_scores": record["valid_scores"]}


def run_job_subprocess(job, workdir, log_path):
    job_path = Path(workdir) / "jobs" / f"{job['cell_id']}.json"
    atomic_write_json(job_path, job)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    # No PYTHONPATH of our own: the same interpreter imports the installed package (a PYTHONPATH
    # the user set is inherited with the rest of the environment).
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "recbole_tfllmer.leaderboard.runner", str(job_path)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proc.returncode


def run_job_in_process(job, workdir):
    from recbole_tfllmer.leaderboard.progress import CellProgress
    from recbole_tfllmer.leaderboard.runner import run_cell

    store = CellStore(job["results_dir"])
    cwd = os.getcwd()
    os.chdir(workdir)  # RecBole writes ./log and ./log_tensorboard
    try:
        record = run_cell(job, workdir=workdir)
    finally:
        os.chdir(cwd)
    store.write(job["cell_id"], record)
    CellProgress(workdir, job["cell_id"], job.get("fingerprint")).clear()
    return 0


def default_workdir(board):
    """Scratch that outlives the process and the checkout (RecBole logs, job files, the embedding
    cache, the progress files a stopped cell resumes from): $XDG_CACHE_HOME or ~/.cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "recbole_tfllmer" / "leaderboard" / board


def build_parser():
    p = argparse.ArgumentParser(prog="python -m recbole_tfllmer.leaderboard", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="leaderboard yaml (leaderboards/<name>.yaml)")
    p.add_argument(
        "--results-root",
        default=None,
        help="folder holding <leaderboard>/ (default: ./results, under the current directory)",
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="scratch folder for RecBole logs, job files, the embedding cache and the progress files that "
        "half-finished cells resume from (default: ~/.cache/recbole_tfllmer/leaderboard/<name>)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="filter cells: field=v1,v2 (fields: dataset backbone method vectors seed); repeat to AND",
    )
    p.add_argument("--summary-only", action="store_true", help="only regenerate the summary from the cell files")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--list", action="store_true", help="list the cells and whether they are done, run nothing")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="A:B",
        help="print the paired difference A - B (methods, or METHOD/vectors) with its 95%% interval over test users "
        "and seeds, per dataset and backbone, from the finished cells; run nothing (repeatable)",
    )
    p.add_argument("--metric", default="ndcg@10", help="the metric --compare reports (ndcg@10 ndcg@20 hit@10 hit@20)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per cell process")
    p.add_argument("--in-process", action="store_true", help="run cells in this process (tests, debugging)")
    p.add_argument("--max-cells", type=int, default=None, help="stop after running this many cells")
    return p


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_queue(entries, store, workdir, args, after_each=None, max_cells=None):
    """Run the QueueEntry's not yet done in `store`, with claims; at most `max_cells` of them
    (None: all). A cell whose required table does not exist yet waits, and is tried again
    after the others; a finished cell whose export a cell still to run needs is missing (it ran
    before the board needed it, or on another machine) runs again last."""
    todo = [e for e in entries if not e.done(store)]
    todo.sort(key=lambda e: store.is_done(e.cell_id, e.fingerprint))  # re-runs for a missing table last
    log(
        f"{len(entries)} cells selected, {len(entries) - len(todo)} already done, {len(todo)} to run "
        f"(results: {store.root}, scratch: {workdir})"
    )
    ran = failed = 0
    while todo and (max_cells is None or ran < max_cells):
        waiting = [e for e in todo if not e.ready()]
        runnable = [e for e in todo if e.ready()]
        if not runnable:
            for e in waiting:
                log(f"wait {e.cell_id}: needs the item table of {e.source_id}, which is not exported yet")
            break
        for i, entry in enumerate(runnable):
            if max_cells is not None and ran >= max_cells:
                break
            outcome = _run_entry(entry, store, workdir, args, f"{i + 1}/{len(runnable)}")
            ran += outcome is not None
            failed += outcome is False
            if after_each is not None and outcome is not None:
                try:
                    after_each()
                except Exception as exc:  # the summary must never stop the queue
                    log(f"summary failed: {exc!r}")
        todo = [e for e in waiting if not e.done(store)]
        if not any(e.ready() for e in todo):
            for e in todo:
                log(f"wait {e.cell_id}: needs the item table of {e.source_id}, which is not exported yet")
            break
    log(f"ran {ran} cell(s), {failed} failed")
    return ran, failed


def _run_entry(entry, store, workdir, args, position):
    """Run one entry under its claim: True (done), False (failed), None (not run)."""
    cell_id = entry.cell_id
    if entry.done(store):  # another worker finished it meanwhile
        return None
    if not store.claim(cell_id):
        log(f"skip {cell_id}: claimed by another live worker")
        return None
    try:
        job = entry.job_for()
        t0 = time.perf_counter()
        log(f"run  {cell_id} ({position})")
        if args.in_process:
            rc = run_job_in_process(job, workdir)
        else:
            rc = run_job_subprocess(job, workdir, workdir / "logs" / f"{cell_id}.log")
        if rc == 0 and entry.done(store):
            rec = store.read(cell_id)
            log(
                f"done {cell_id} in {time.perf_counter() - t0:.0f}s: valid {rec.get('best_valid_score')}, test "
                f"NDCG@10 {rec['test'].get('ndcg@10', float('nan')):.4f}, epochs {rec['epochs_run']}"
                + (
                    f", kappa init {rec['conditioning']['init']['mean']}, end {rec['conditioning']['end']['mean']}"
                    if rec.get("conditioning")
                    else ""
                )
            )
            return True
        log(
            f"FAIL {cell_id} (rc={rc}); see {workdir / 'logs' / (cell_id + '.log')} "
            f"and {store.failed_dir / (cell_id + '.json')}"
        )
        return False
    finally:
        store.release(cell_id)


def _list_state(spec, cell, store, workdir, needed):
    """`--list`'s line for a cell, its state word, and the half-finished cell's standing or None.

    States: done / rerun (finished, but an export a cell still to run needs is missing) / running
    (a live worker holds the claim) / paused (a progress file, no worker) / waits (its source
    cell's export does not exist yet) / todo. `needed` is still_needed_exports."""
    from recbole_tfllmer.leaderboard.progress import CellProgress  # torch: only where a progress file is read

    entry = cell_entry(spec, cell, store, workdir, needed)
    if entry.done(store):
        return f"done    {cell.cell_id}", "done", None
    if store.is_done(cell.cell_id, entry.fingerprint):  # finished, but a cell still to run needs a missing export
        missing = ", ".join(a.name for a in entry.artifacts if not a.is_file())
        replay = export_replay(store, cell.cell_id, entry.fingerprint)
        how = f"replays up to its best epoch {replay['best_epoch']}, last" if replay else "runs again last"
        line = f"rerun   {cell.cell_id}  (finished, but a cell still to run needs its export {missing}: {how})"
        where, standing = CellProgress(workdir, cell.cell_id, entry.fingerprint).standing()
        if where:
            line += f"; {_unfinished_state(store, cell.cell_id, where).strip()}: {where}"
        if replay:
            standing = {"epochs_done": (standing or {}).get("epochs_done", 0), "epochs_total": replay["best_epoch"] + 1}
        return line, "rerun", standing
    where, standing = CellProgress(workdir, cell.cell_id, entry.fingerprint).standing()
    if not where and not entry.ready():
        line = f"waits   {cell.cell_id}  (needs the export of {entry.source_id}: runs once that cell is done)"
        return line, "waits", None
    state = _unfinished_state(store, cell.cell_id, where)
    return f"{state} {cell.cell_id}" + (f"  ({where})" if where else ""), state.strip(), standing


def _unfinished_state(store, cell_id, where):
    """The padded state word of a cell or trial that is not done: a live worker's claim, else a
    progress file (`where`), else nothing yet."""
    return "running" if store.is_claimed(cell_id) else ("paused " if where else "todo   ")


def _cell_cost(record):
    """A finished record's cost for `--list`: ("epochs", epochs run, seconds per epoch) for a cell
    that trained epoch by epoch, ("whole", seconds) for one that did not (A-LLMRec's stages, a
    scored LM: their time is in data / fit / test), or None."""
    seconds = list(record.get("epoch_train_seconds") or []) + list(record.get("epoch_valid_seconds") or [])
    if record.get("epochs_run") and seconds:
        return ("epochs", record["epochs_run"], sum(seconds) / record["epochs_run"])
    timings = record.get("timings") or {}
    whole = sum(timings.get(k) or 0.0 for k in ("data_seconds", "fit_seconds", "test_seconds"))
    return ("whole", whole) if whole > 0 else None


def time_left(store, states):
    """`--list`'s closing estimate: the one-core hours the unfinished cells still need.

    A cell is priced from the finished cells of the same dataset, backbone and method (median
    epochs run and seconds per epoch, training plus validation; or the median whole-cell time of
    a method that trains no epochs, e.g. A-LLMRec's LM scoring); a method with none yet is priced
    like the dataset and backbone's other finished cells, and the line names it, since its own
    stages (SCFT, an LM) may cost far more. A half-finished cell needs at least its remaining
    patience; a rerun cell counts in full, or up to its best epoch when it replays. Cells whose
    dataset and backbone have no finished cell that trained epochs are counted, not estimated.
    Returns (line, hours or None)."""
    import statistics

    same_method, same_backbone = {}, {}
    for r in store.read_all():
        cost = _cell_cost(r)
        if cost is None:
            continue
        same_method.setdefault((r["dataset"], r["backbone"], r["method"]), []).append(cost)
        if cost[0] == "epochs":
            same_backbone.setdefault((r["dataset"], r["backbone"]), []).append(cost)
    hours, unknown, left, borrowed = 0.0, 0, 0, set()
    for cell, state, standing in states:
        if state == "done":
            continue
        left += 1
        own = same_method.get((cell.dataset, cell.backbone, cell.method), [])
        trained = [c for c in own if c[0] == "epochs"]
        if own and not trained:  # a method that trains no epochs: its whole-cell time
            hours += statistics.median(c[1] for c in own) / 3600
            continue
        typical = trained or same_backbone.get((cell.dataset, cell.backbone))
        if not typical:
            unknown += 1
            continue
        if not trained:
            borrowed.add(cell.method)
        epochs = statistics.median(e for _, e, _ in typical)
        per_epoch = statistics.median(s for _, _, s in typical)
        if standing and "epochs_total" in standing:  # an export replay: as far as the recorded best epoch
            epochs = max(standing["epochs_total"] - standing["epochs_done"], 0)
        elif standing:
            epochs = max(epochs - standing["epochs_done"], standing["patience_left"] or 0)
        hours += epochs * per_epoch / 3600
    if not left:
        return f"{len(states)} cells, all done", 0.0
    if unknown == left:  # "about 0.0 h" would read as "nearly done"
        return (
            f"{left} of {len(states)} cells left: no estimate yet (no finished cell of the same dataset and "
            "backbone to go by)",
            None,
        )
    notes = ["from the finished cells of the same dataset, backbone and method"]
    if borrowed:
        notes.append(
            f"{', '.join(sorted(borrowed))}: no finished cell yet, priced like the other methods "
            "(its own stages, e.g. SCFT or an LM, not included)"
        )
    if unknown:
        notes.append(f"{unknown} cell(s) with no finished cell to go by, not counted")
    line = f"{left} of {len(states)} cells left: about {hours:.1f} h of one core ({'; '.join(notes)})"
    return line, (hours if not unknown else None)


def _tune(spec, filters, workdir, args):
    """Phase 1 of a board with `tuning:` (tuning.py): run the trials, pick the winners, set spec.tuned."""
    from recbole_tfllmer.leaderboard import tuning

    trial_store = tuning.tuning_store(spec, args.results_root)
    ran = 0
    chosen = [t for t in tuning.trials(spec) if cell_matches(t.cell, filters)]
    if args.list:
        from recbole_tfllmer.leaderboard.progress import CellProgress  # torch: only where a progress file is read

        for t in chosen:
            if tuning.trial_record(spec, trial_store, t):
                print(f"done    trial {t.trial_id}")
                continue
            fingerprint = tuning.trial_spec(spec, t).fingerprint(t.cell)
            where = CellProgress(workdir, t.trial_id, fingerprint).describe()
            state = _unfinished_state(trial_store, t.trial_id, where)
            print(f"{state} trial {t.trial_id}" + (f"  ({where})" if where else ""))
    elif not args.summary_only:
        log(f"tuning {spec.name}: {spec.tuning['trials']} trials per method, seed {spec.tuning['seed']}")
        entries = []
        for t in chosen:
            t_spec = tuning.trial_spec(spec, t)
            entries.append(
                QueueEntry(
                    t.trial_id,
                    t_spec.fingerprint(t.cell),
                    lambda t=t, t_spec=t_spec: make_job(t_spec, t.cell, trial_store, workdir, args.threads, t.trial_id),
                )
            )
        ran, _ = run_queue(entries, trial_store, workdir, args, max_cells=args.max_cells)
    groups, selection = tuning.select(spec, trial_store)
    if not args.list:
        for path in tuning.write_report(spec, groups, selection, args.results_root):
            log(f"wrote {path}")
    spec.tuned = {key: winner["options"] for key, winner in selection.items()}
    return trial_store, selection, ran


def main(argv=None):
    args = build_parser().parse_args(argv)
    spec = load_spec(args.config)
    store = CellStore(spec.results_dir(args.results_root))
    filters = parse_only(args.only)
    workdir = Path(args.workdir or default_workdir(spec.name)).resolve()
    if not (args.summary_only or args.list or args.compare):
        workdir.mkdir(parents=True, exist_ok=True)

    cells = [c for c in ordered_cells(spec) if cell_matches(c, filters)]
    if args.compare:
        from recbole_tfllmer.leaderboard.compare import compare_pairs, format_rows

        wanted = {c.cell_id: spec.fingerprint(c) for c in cells}
        records = [r for r in store.read_all() if wanted.get(r["cell_id"]) == r.get("fingerprint")]
        for line in format_rows(compare_pairs(records, args.compare, args.metric, spec.methods)):
            print(line)
        return 0
    budget = args.max_cells  # --max-cells counts tuning trials and board cells together
    if spec.tuning:
        from recbole_tfllmer.leaderboard.spec import tuned_key
        from recbole_tfllmer.leaderboard.tuning import reuse_winning_trial

        trial_store, selection, trials_ran = _tune(spec, filters, workdir, args)
        budget = None if budget is None else max(0, budget - trials_ran)
        waiting = [c for c in cells if tuned_key(c) not in spec.tuned]
        if waiting:
            log(f"{len(waiting)} board cell(s) wait for their tuning trials to finish")
        cells = [c for c in cells if tuned_key(c) in spec.tuned]
        if not (args.summary_only or args.list):
            for c in cells:
                if not store.is_done(c.cell_id, spec.fingerprint(c)) and reuse_winning_trial(
                    spec, store, trial_store, c, selection
                ):
                    log(
                        f"{c.cell_id}: the winning tuning trial {selection[tuned_key(c)]['trial_id']} (same configuration)"
                    )

    if args.list:
        states, needed = [], still_needed_exports(spec, store)
        for c in cells:
            line, state, standing = _list_state(spec, c, store, workdir, needed)
            print(line)
            states.append((c, state, standing))
        print(time_left(store, states)[0])
        return 0

    from recbole_tfllmer.leaderboard.summary import write_summary

    if not args.summary_only:
        log(f"leaderboard {spec.name}")
        needed = still_needed_exports(spec, store)
        entries = [cell_entry(spec, c, store, workdir, needed, args.threads) for c in cells]
        run_queue(
            entries, store, workdir, args, after_each=lambda: write_summary(spec, store, plots=False), max_cells=budget
        )

    rows, written = write_summary(spec, store, plots=not args.no_plots)
    for path in written:
        log(f"wrote {path}")
    return 0
