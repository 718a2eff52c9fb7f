"""Validation-only hyper-parameter search with the same budget for every method.

A leaderboard yaml with a `tuning:` section is run in two phases by the same command:

1. *trials*: for every dataset x backbone x method x vector kind, `trials` option sets drawn
   without replacement (fixed `sampler_seed`) from that method's grid in `space` (the whole
   grid when it is no larger), each trained once with the tuning `seed` under the board's
   protocol.  Trial cells live in results/<board>/tuning/cells/, resumable like board cells.
2. *selection*: per group, the trial with the best validation score (RecBole's `valid_metric`
   of the best epoch, i.e. NDCG@10 here) wins; test metrics are recorded but never looked at.
   The winners go to results/<board>/tuning/selected.json and the search to
   results/<board>/tuning.md; the board's cells then run with the chosen options.  The
   tuning-seed cell is the winning trial itself (same configuration, same fingerprint), so it
   is copied rather than trained again.
"""

import copy
import itertools
import zlib
from dataclasses import dataclass, replace

import numpy as np

from recbole_tfllmer.atomic import atomic_write_text
from recbole_tfllmer.leaderboard.spec import Cell, tuned_key
from recbole_tfllmer.leaderboard.store import CellStore, atomic_write_json


@dataclass(frozen=True)
class Trial:
    cell: Cell  # the cell it tunes, with the tuning seed
    index: int
    options: tuple  # sorted (option, value) pairs

    @property
    def trial_id(self):
        return f"{self.cell.cell_id}__t{self.index}"

    @property
    def overrides(self):
        return dict(self.options)


def tuning_store(spec, results_root=None):
    return CellStore(spec.results_dir(results_root) / "tuning")


def method_grid(spec, method):
    """Every option set of the method's grid, in a fixed order."""
    grid = spec.tuning["space"][method]
    names = sorted(grid)
    return [tuple(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def method_trials(spec, method):
    """The method's `trials` option sets: a seeded sample of its grid (all of it if smaller)."""
    grid, budget = method_grid(spec, method), spec.tuning["trials"]
    if len(grid) <= budget:
        return grid
    rng = np.random.default_rng([spec.tuning["sampler_seed"], zlib.crc32(method.encode("utf-8"))])
    return [grid[i] for i in sorted(rng.choice(len(grid), size=budget, replace=False))]


def trials(spec):
    out, seen = [], set()
    for cell in spec.cells():
        base = replace(cell, seed=spec.tuning["seed"])
        if base in seen:
            continue
        seen.add(base)
        out += [Trial(base, i, options) for i, options in enumerate(method_trials(spec, base.method))]
    return out


def trial_spec(spec, trial):
    """The board's spec with this trial's options as the tuned options of its group."""
    out = copy.copy(spec)
    out.tuned = {**spec.tuned, tuned_key(trial.cell): trial.overrides}
    return out


def trial_record(spec, store, trial):
    record = store.read(trial.trial_id)
    if (
        record
        and record.get("status") == "done"
        and record.get("fingerprint") == trial_spec(spec, trial).fingerprint(trial.cell)
    ):
        return record
    return None


def select(spec, store):
    """({group: [(trial, record or None)]}, {group: winner}) — a group with a missing trial has no winner."""
    groups = {}
    for trial in trials(spec):
        groups.setdefault(tuned_key(trial.cell), []).append((trial, trial_record(spec, store, trial)))
    selection = {}
    for key, entries in groups.items():
        if any(record is None for _, record in entries):
            continue
        trial, record = max(entries, key=lambda e: (e[1]["best_valid_score"], -e[0].index))
        selection[key] = {
            "options": trial.overrides,
            "trial_id": trial.trial_id,
            "valid_score": record["best_valid_score"],
            "trials": len(entries),
        }
    return groups, selection


def reuse_winning_trial(spec, board_store, trial_store, cell, selection):
    """Copy the winning trial as the board's tuning-seed cell when their fingerprints agree."""
    winner = selection.get(tuned_key(cell))
    if winner is None or cell.seed != spec.tuning["seed"]:
        return False
    record = trial_store.read(winner["trial_id"])
    fingerprint = spec.fingerprint(cell)
    if not record or record.get("status") != "done" or record.get("fingerprint") != fingerprint:
        return False
    board_store.write(
        cell.cell_id, dict(record, cell_id=cell.cell_id, leaderboard=spec.name, reused_from_trial=winner["trial_id"])
    )
    return True


def _value(value):
    return "~" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def write_report(spec, groups, selection, results_root=None):
    """tuning/selected.json (machine-readable) and tuning.md (the whole search, winners bold)."""
    store = tuning_store(spec, results_root)
    atomic_write_json(store.root / "selected.json", selection)
    t = spec.tuning
    lines = [
        f"# Tuning: {spec.name}",
        "",
        f"Validation-only search, the same budget for every method: {t['trials']} trials per method and vector "
        f"kind, drawn without replacement from the method's grid below (sampler seed {t['sampler_seed']}; the whole "
        f"grid when it has at most {t['trials']} points), each trained once with seed {t['seed']} under the board's "
        "protocol. The winner is the trial with the best validation score (RecBole's `valid_metric` at the best "
        "epoch); test NDCG@10 is shown for the record only and played no part in the choice. The board's cells "
        "then use the winners' options for every seed.",
        "",
        "Grids:",
        "",
    ]
    for method in spec.methods:
        grid = t["space"][method]
        lines.append(
            f"- {method}: "
            + "; ".join(f"`{k}` ∈ {{{', '.join(_value(v) for v in grid[k])}}}" for k in sorted(grid))
            + f" ({len(method_grid(spec, method))} points)"
        )
    lines.append("")
    for key, entries in groups.items():
        winner = selection.get(key)
        lines += [f"## {key}", "", "| trial | options | valid score | test NDCG@10 | epochs |", "|---|---|---|---|---|"]
        for trial, record in entries:
            options = ", ".join(f"{k}={_value(v)}" for k, v in trial.options)
            if record is None:
                lines.append(f"| t{trial.index} | {options} | not run | | |")
                continue
            bold = "**" if winner and winner["trial_id"] == trial.trial_id else ""
            lines.append(
                f"| {bold}t{trial.index}{bold} | {bold}{options}{bold} | {bold}{record['best_valid_score']:.4f}{bold} "
                f"| {record['test'].get('ndcg@10', float('nan')):.4f} | {record.get('epochs_run')} |"
            )
        lines.append("")
    atomic_write_text(store.root.parent / "tuning.md", "\n".join(lines))
    return [store.root / "selected.json", store.root.parent / "tuning.md"]
