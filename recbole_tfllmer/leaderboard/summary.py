"""Aggregate cell files into leaderboard.csv / leaderboard.md (mean +- std over seeds).

Rows are (dataset, backbone, vectors, method); a method without LLM vectors (vectors
"none", e.g. RandInit) is one row per dataset/backbone. In the markdown tables the best
mean of each metric column (within one dataset) is in bold; ties are all bold.
"""

import csv
import io
import math
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

METRICS = ("ndcg@10", "ndcg@20", "hit@10", "hit@20")
METRIC_LABELS = {"ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20", "hit@10": "HR@10", "hit@20": "HR@20"}
GROUP_KEYS = ("dataset", "backbone", "vectors", "method")


def mean_std(values):
    """Mean and sample std (ddof=1) of the finite values; the std of one value is undefined
    (nan: tables then show the mean alone, not "± 0"); (nan, nan) if none."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return math.nan, math.nan
    std = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
    return float(vals.mean()), std


def _get(record, path):
    """Nested lookup "a.b.c"; a dict of numbers at the end (e.g. a timing split into parts) is summed."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict):
        parts = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return float(sum(parts)) if parts else None
    return value


def aggregate(records, method_order=None, vector_order=None):
    """One dict per (dataset, backbone, vectors, method) group with means/stds over seeds."""
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in GROUP_KEYS)].append(r)

    def order_key(key):
        dataset, backbone, vectors, method = key
        m = method_order.index(method) if method_order and method in method_order else 999
        v = (
            vector_order.index(vectors)
            if vector_order and vectors in vector_order
            else (-1 if vectors == "none" else 999)
        )
        return (dataset, backbone, v, m, method)

    rows = []
    for key in sorted(groups, key=order_key):
        recs = sorted(groups[key], key=lambda r: r["seed"])
        row = OrderedDict(zip(GROUP_KEYS, key))
        row["n_seeds"] = len(recs)
        row["seeds"] = " ".join(str(r["seed"]) for r in recs)
        for metric in METRICS:
            row[f"test_{metric}_mean"], row[f"test_{metric}_std"] = mean_std([_get(r, f"test.{metric}") for r in recs])
        row["valid_ndcg@10_mean"], row["valid_ndcg@10_std"] = mean_std([_get(r, "best_valid.ndcg@10") for r in recs])
        for when in ("init", "end"):
            row[f"cond_{when}_mean"], row[f"cond_{when}_std"] = mean_std(
                [_get(r, f"conditioning.{when}.mean") for r in recs]
            )
            row[f"cond_{when}_median"], _ = mean_std([_get(r, f"conditioning.{when}.median") for r in recs])
        row["final_train_loss_mean"], row["final_train_loss_std"] = mean_std(
            [(r.get("train_loss_per_batch") or [math.nan])[-1] for r in recs]
        )
        row["epochs_run_mean"], _ = mean_std([r.get("epochs_run") for r in recs])
        row["best_epoch_mean"], _ = mean_std([r.get("best_epoch") for r in recs])
        row["epoch_cap_max"] = max(
            (float(r.get("epoch_cap") or _get(r, "config.epochs") or math.nan) for r in recs), default=math.nan
        )
        row["epoch_seconds_mean"], _ = mean_std(
            [float(np.mean(r["epoch_train_seconds"])) for r in recs if r.get("epoch_train_seconds")]
        )
        row["fit_seconds_mean"], _ = mean_std([_get(r, "timings.fit_seconds") for r in recs])
        row["embedding_seconds_mean"], _ = mean_std([_get(r, "timings.embedding_seconds") for r in recs])
        row["graph_seconds_mean"], _ = mean_std([_get(r, "timings.graph_seconds") for r in recs])
        row["rec_pca_seconds_mean"], _ = mean_std([_get(r, "timings.rec_pca_seconds") for r in recs])
        # Rec-PCA's geometry relative to plain PCA (the same for every seed: a function of data and options)
        for stat in ("retained_variance", "tv_ratio"):
            row[f"{stat}_vs_pca"], _ = mean_std(
                [
                    _ratio(_get(r, f"tfllmer_info.rec_pca_{stat}"), _get(r, f"tfllmer_info.rec_pca_{stat}_pca"))
                    for r in recs
                ]
            )
        row["peak_rss_mb_max"] = max((_get(r, "memory.peak_rss_mb") or math.nan) for r in recs)
        buckets = [(_get(r, "longtail.buckets") or []) for r in recs]
        n_buckets = max((len(b) for b in buckets), default=0)
        for b in range(n_buckets):
            row[f"longtail_b{b}_ndcg@10_mean"], _ = mean_std(
                [bs[b].get("ndcg@10") if len(bs) > b else None for bs in buckets]
            )
        rows.append(row)
    return rows


def _ratio(value, reference):
    return value / reference if value is not None and reference else None


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def to_csv(rows):
    if not rows:
        return ""
    fields = list(rows[0].keys())
    for row in rows[1:]:
        for key in row:
            if key not in fields:
                fields.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def best_flags(rows, column, bigger=True, decimals=4):
    """Indices of rows whose value in `column`, rounded as displayed, is the best."""
    vals = [
        (i, round(r[column], decimals))
        for i, r in enumerate(rows)
        if isinstance(r.get(column), float) and math.isfinite(r[column])
    ]
    if not vals:
        return set()
    best = max(v for _, v in vals) if bigger else min(v for _, v in vals)
    return {i for i, v in vals if v == best}


def _cell(mean, std, bold, digits=4):
    if mean is None or not math.isfinite(mean):
        return "—"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"
    return f"**{text}**" if bold else text


def _sci(value):
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3g}"


def to_markdown(rows, title="Leaderboard", protocol="", notes=None, comparisons=None, anchors=None):
    """Markdown: protocol first, then one table per dataset (rows = backbone/vectors/method).

    `comparisons` (see `paired_comparisons`): with them, bold marks a method *first* only where
    its paired 95% interval against the runner-up excludes zero with two or more seeds a side
    (a one-seed gap is "ahead"), and a table of paired
    differences follows; without them (cells that predate per-user ranks) bold is the best mean.
    `anchors` (see `anchor_rows`): each row's distance to a published result, per dataset."""
    comparisons = comparisons or {}
    lines = [f"# {title}", ""]
    if protocol:
        lines += ["## Protocol", "", protocol.strip(), ""]
    by_dataset = OrderedDict()
    for row in rows:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for dataset, drows in by_dataset.items():
        paired = any(comparisons.get((dataset, b, m)) for b in {r["backbone"] for r in drows} for m in METRICS)
        legend = (
            "bold = first: best mean, and the paired 95% interval against the runner-up excludes zero "
            "with two or more seeds a side"
            if paired
            else "best mean per column in bold; no paired intervals (cells without per-user ranks)"
        )
        lines += [f"## {dataset}: test metrics (mean ± std over seeds; {legend})", ""]
        backbones = list(OrderedDict.fromkeys(r["backbone"] for r in drows))
        header = ["Method", "Vectors", "Seeds"]
        for b in backbones:
            header += [f"{b} {METRIC_LABELS[m]}" for m in METRICS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        # one line per (vectors, method), columns per backbone
        keys = list(OrderedDict.fromkeys((r["vectors"], r["method"]) for r in drows))
        table = {(r["backbone"], r["vectors"], r["method"]): r for r in drows}
        bold = {}
        for b in backbones:
            brows = [table.get((b, v, m)) for v, m in keys]
            present = [(i, r) for i, r in enumerate(brows) if r is not None]
            for metric in METRICS:
                comp = comparisons.get((dataset, b, metric))
                if comp:
                    bold[(b, metric)] = {
                        i for i, r in present if comp.get((r["vectors"], r["method"]), {}).get("first")
                    }
                else:
                    flags = best_flags([r for _, r in present], f"test_{metric}_mean")
                    bold[(b, metric)] = {present[j][0] for j in flags}
        for i, (vectors, method) in enumerate(keys):
            seeds = {table[(b, vectors, method)]["n_seeds"] for b in backbones if (b, vectors, method) in table}
            cells = [method, vectors, "/".join(str(s) for s in sorted(seeds))]
            for b in backbones:
                r = table.get((b, vectors, method))
                for metric in METRICS:
                    if r is None:
                        cells.append("—")
                    else:
                        cells.append(_cell(r[f"test_{metric}_mean"], r[f"test_{metric}_std"], i in bold[(b, metric)]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += paired_section(dataset, [b for b in backbones], comparisons)
        lines += anchor_section(dataset, [a for a in anchors or [] if a["dataset"] == dataset])
        # diagnostics table
        lines += [f"### {dataset}: training diagnostics (means over seeds)", ""]
        dh = [
            "Backbone",
            "Method",
            "Vectors",
            "κ(H) init",
            "κ(H) end",
            "final train loss",
            "epochs",
            "best epoch",
            "epoch cap",
            "s/epoch",
            "encode s",
            "graph s",
            "Rec-PCA s",
            "kept var / PCA",
            "TV/var / PCA",
            "peak RSS MB",
        ]
        lines.append("| " + " | ".join(dh) + " |")
        lines.append("|" + "---|" * len(dh))
        for r in drows:
            lines.append(
                "| "
                + " | ".join(
                    [
                        r["backbone"],
                        r["method"],
                        r["vectors"],
                        _sci(r["cond_init_mean"]),
                        _sci(r["cond_end_mean"]),
                        _fmt(r["final_train_loss_mean"]),
                        _fmt(r["epochs_run_mean"], 1),
                        _fmt(r["best_epoch_mean"], 1),
                        _fmt(r["epoch_cap_max"], 0),
                        _fmt(r["epoch_seconds_mean"], 1),
                        _fmt(r["embedding_seconds_mean"], 2),
                        _fmt(r["graph_seconds_mean"], 3),
                        _fmt(r["rec_pca_seconds_mean"], 3),
                        _fmt(r["retained_variance_vs_pca"], 2),
                        _fmt(r["tv_ratio_vs_pca"], 2),
                        _fmt(r["peak_rss_mb_max"], 0),
                    ]
                )
                + " |"
            )
        lines.append("")
        lt_cols = sorted(k for k in drows[0] if k.startswith("longtail_b"))
        if lt_cols:
            lines += [f"### {dataset}: test NDCG@10 by target-popularity bucket (b0 = least popular fifth)", ""]
            lh = ["Backbone", "Method", "Vectors"] + [c.split("_")[1] for c in lt_cols]
            lines.append("| " + " | ".join(lh) + " |")
            lines.append("|" + "---|" * len(lh))
            for r in drows:
                lines.append(
                    "| "
                    + " | ".join([r["backbone"], r["method"], r["vectors"]] + [_fmt(r.get(c)) for c in lt_cols])
                    + " |"
                )
            lines.append("")
    for note in notes or []:
        lines += [note, ""]
    return "\n".join(lines)


def write_summary(spec, store, out_dir=None, plots=True):
    """Regenerate leaderboard.csv, cells.csv, leaderboard.md (and plots) from the cell files."""
    from recbole_tfllmer.atomic import atomic_write_text

    out_dir = Path(out_dir or store.root)
    records = store.read_all()
    known = {c.cell_id: spec.fingerprint(c) for c in spec.cells()}
    current = [r for r in records if known.get(r["cell_id"]) == r.get("fingerprint")]
    stale = [r["cell_id"] for r in records if r["cell_id"] not in known or known[r["cell_id"]] != r.get("fingerprint")]
    rows = aggregate(current, method_order=spec.methods, vector_order=list(spec.vector_kinds))
    missing = sorted(set(known) - {r["cell_id"] for r in current})
    notes = [
        f"Cells: {len(current)} of {len(known)} done"
        + (f"; missing: {', '.join(missing)}" if missing else "")
        + (f"; {len(stale)} cell file(s) from another configuration ignored" if stale else "")
        + ".",
    ]
    diffs = [r["longtail"]["abs_diff"] for r in current if (r.get("longtail") or {}).get("abs_diff") is not None]
    if diffs:
        notes.append(
            f"Own full-sort pass vs RecBole test metrics (NDCG and HR @10, @20): max |difference| = {max(diffs):.2e} over {len(diffs)} cells."
        )
    codes = sorted({r.get("code_fingerprint") or "unrecorded" for r in current})
    if codes:
        notes.append(f"Plugin source fingerprints of the cells (code_fingerprint): {', '.join(codes)}.")
    late = late_best_epochs(current)
    if late:
        notes.append("Not converged (best epoch in the last 20% of the epoch cap): " + ", ".join(late) + ".")
    comparisons = paired_comparisons(current)
    anchors = anchor_rows(current, spec.anchors)
    atomic_write_text(out_dir / "leaderboard.csv", to_csv(rows))
    if comparisons:
        atomic_write_text(out_dir / "paired.csv", to_csv(paired_rows(comparisons)))
    if anchors:
        atomic_write_text(out_dir / "anchors.csv", to_csv(anchors))
    atomic_write_text(out_dir / "cells.csv", to_csv(cell_rows(current)))
    markdown = to_markdown(rows, f"Leaderboard: {spec.name}", spec.protocol, notes, comparisons, anchors)
    atomic_write_text(out_dir / "leaderboard.md", markdown)
    written = [out_dir / "leaderboard.csv", out_dir / "cells.csv", out_dir / "leaderboard.md"]
    if comparisons:
        written.append(out_dir / "paired.csv")
    if anchors:
        written.append(out_dir / "anchors.csv")
    if plots and current:
        try:
            import matplotlib  # noqa: F401  (optional: the `plots` extra)
        except ImportError:
            print("leaderboard: no plots (matplotlib is not installed): pip install recbole-tfllmer[plots]", flush=True)
        else:
            from recbole_tfllmer.leaderboard.plots import write_plots

            written += write_plots(current, out_dir, method_order=spec.methods, vector_order=list(spec.vector_kinds))
    return rows, written


def cell_rows(records):
    rows = []
    for r in sorted(records, key=lambda r: r["cell_id"]):
        row = OrderedDict((k, r[k]) for k in ("dataset", "backbone", "method", "vectors", "seed"))
        for metric in METRICS:
            row[f"test_{metric}"] = _get(r, f"test.{metric}")
        row["valid_ndcg@10"] = _get(r, "best_valid.ndcg@10")
        row["cond_init_mean"] = _get(r, "conditioning.init.mean")
        row["cond_end_mean"] = _get(r, "conditioning.end.mean")
        row["epochs_run"] = r.get("epochs_run")
        row["best_epoch"] = r.get("best_epoch")
        row["final_train_loss"] = (r.get("train_loss_per_batch") or [None])[-1]
        row["fit_seconds"] = _get(r, "timings.fit_seconds")
        row["cell_seconds"] = _get(r, "timings.cell_seconds")
        row["peak_rss_mb"] = _get(r, "memory.peak_rss_mb")
        rows.append(row)
    return rows


# -- paired intervals (paired.py) ---------------------------------------------------------------
PAIRED_METRICS = ("ndcg@10", "hit@10")


def late_best_epochs(records, fraction=0.2):
    """Cells whose best epoch lies in the last `fraction` of their epoch cap (not converged)."""
    late = []
    for r in records:
        cap, best = r.get("epoch_cap") or _get(r, "config.epochs"), r.get("best_epoch")
        if cap and best is not None and best + 1 > (1 - fraction) * cap:
            late.append(f"{r['cell_id']} (best epoch {best} of {cap})")
    return late


def by_dataset_backbone(records):
    """{(dataset, backbone): {(vectors, method): [records]}}: the groups whose cells share test
    rows, so any two methods within one can be compared user by user."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r["dataset"], r["backbone"])][(r["vectors"], r["method"])].append(r)
    return groups


def paired_comparisons(records, baseline="LLMInit"):
    """{(dataset, backbone, metric): compare_methods(...)} over every (vectors, method) entry of a
    dataset and backbone; each entry's baseline is `baseline` with the same vectors (or its only
    vector kind, for methods without vectors)."""
    from recbole_tfllmer.leaderboard.paired import compare_methods

    out = {}
    for (dataset, backbone), by_label in by_dataset_backbone(records).items():
        kinds = [label for label in by_label if label[1] == baseline]

        def baseline_of(label, kinds=kinds):
            # the baseline with the same vectors; where the board has the baseline with one vector
            # kind only, every method without its own (RandInit: no vectors) is compared with that one
            return (label[0], baseline) if (label[0], baseline) in kinds or len(kinds) != 1 else kinds[0]

        for metric in METRICS:
            comp = compare_methods(by_label, metric, baseline_of=baseline_of)
            if comp:
                out[(dataset, backbone, metric)] = comp
    return out


def _interval(d):
    if not d:
        return "—"
    text = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    return text if d["covers_seeds"] else text + " ¹"


def paired_section(dataset, backbones, comparisons):
    """Markdown lines: per backbone, each method's mean and its paired differences."""
    lines = []
    for b in backbones:
        comps = {m: comparisons.get((dataset, b, m)) for m in PAIRED_METRICS}
        if not all(comps.values()):
            continue
        lines += [f"### {dataset} / {b}: paired differences, 95% intervals over test users and seeds", ""]
        header = ["Method", "Vectors"]
        for m in PAIRED_METRICS:
            label = METRIC_LABELS[m]
            header += [label, f"{label} − best other", f"{label} − LLMInit", f"{label} first?"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for label in comps[PAIRED_METRICS[0]]:
            cells = [label[1], label[0]]
            for m in PAIRED_METRICS:
                e = comps[m][label]
                if e["first"]:
                    first = "**first**"
                elif e["ahead"]:
                    first = "ahead ¹ (one seed: not a claim)"
                elif e["best_other"] and e["mean"] >= comps[m][e["best_other"]]["mean"]:
                    first = "best mean, tied"
                else:
                    first = ""
                cells += [
                    f"{e['mean']:.4f}",
                    _interval(e["vs_best_other"]) + f" vs {e['best_other'][1]}" if e["best_other"] else "—",
                    _interval(e["vs_baseline"]),
                    first,
                ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "Difference = this method minus the other (mean over seeds and test users), with its 95% "
            "interval: paired bootstrap over test users plus the seed-to-seed spread (Welch t). ¹ one seed on a "
            "side: user sampling only. A method is first only where its interval against the best other "
            "method excludes zero and covers the seed spread (two or more seeds a side).",
            "",
        ]
    return lines


def anchor_rows(records, anchors):
    """One row per (anchor, vector kind with cells): our mean on the anchor's dataset, backbone,
    method and metric, minus the published value, with the interval of our side (users and
    seeds; `difference_to_value`). An anchor whose cells have not run yet gets a row without ours."""
    from recbole_tfllmer.leaderboard.paired import difference_to_value, per_user_values

    rows = []
    for anchor in anchors or []:
        by_vectors = defaultdict(list)
        for r in records:
            if (r["dataset"], r["backbone"], r["method"]) == (anchor["dataset"], anchor["backbone"], anchor["method"]):
                by_vectors[r["vectors"]].append(r)
        for vectors, recs in sorted(by_vectors.items()) or [("", [])]:
            row = OrderedDict(
                dataset=anchor["dataset"],
                backbone=anchor["backbone"],
                method=anchor["method"],
                vectors=vectors,
                metric=anchor["metric"],
                anchor=anchor["value"],
                source=anchor["source"],
                seeds=len(recs),
                ours=math.nan,
                diff=math.nan,
                low=math.nan,
                high=math.nan,
                covers_seeds=False,
            )
            if recs:
                values = per_user_values(recs, anchor["metric"])
                if values is not None:
                    d = difference_to_value(values, anchor["value"])
                    row.update(ours=float(values.mean()), diff=d["diff"], low=d["low"], high=d["high"])
                    row["covers_seeds"] = d["covers_seeds"]
                else:  # cells without per-user ranks: the mean only
                    row["ours"] = float(np.mean([_get(r, f"test.{anchor['metric']}") for r in recs]))
                    row["diff"] = row["ours"] - anchor["value"]
            rows.append(row)
    return rows


def anchor_section(dataset, anchors):
    """Markdown lines: how far each row with a published anchor is from it."""
    if not anchors:
        return []
    lines = [
        f"### {dataset}: distance to published results (same split and filtering, full ranking)",
        "",
        "| Backbone | Method | Vectors | Metric | published | source | seeds | ours | ours − published [95%] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in anchors:
        if a["seeds"]:
            d = {"diff": a["diff"], "low": a["low"], "high": a["high"], "covers_seeds": a["covers_seeds"]}
            gap = _interval(d) if math.isfinite(a["low"]) else f"{a['diff']:+.4f}"
            ours = f"{a['ours']:.4f}"
        else:
            gap = ours = "not run yet"
        lines.append(
            f"| {a['backbone']} | {a['method']} | {a['vectors'] or '—'} | {METRIC_LABELS[a['metric']]} | "
            f"{a['anchor']:.4f} | {a['source']} | {a['seeds']} | {ours} | {gap} |"
        )
    lines += [
        "",
        "The interval covers our side only (test users and, with two or more seeds, the seed spread; ¹ one "
        "seed): the published number's own seed-to-seed spread is not known here.",
        "",
    ]
    return lines


def paired_rows(comparisons):
    rows = []
    for (dataset, backbone, metric), comp in sorted(comparisons.items()):
        for (vectors, method), e in comp.items():
            row = OrderedDict(
                dataset=dataset,
                backbone=backbone,
                vectors=vectors,
                method=method,
                metric=metric,
                mean=e["mean"],
                first=e["first"],
                ahead=e["ahead"],
            )
            for kind in ("best_other", "baseline"):
                d = e[f"vs_{kind}"]
                row[kind] = "/".join(e[kind][::-1]) if e[kind] else ""
                for key in ("diff", "low", "high", "df", "se_users", "se_total", "covers_seeds"):
                    row[f"{kind}_{key}"] = d[key] if d else math.nan
            rows.append(row)
    return rows
