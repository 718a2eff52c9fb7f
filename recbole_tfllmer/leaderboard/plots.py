"""PNG plots from cell records: loss curves, long-tail NDCG@10, conditioning (init vs end)."""

from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(records, vector_order):
    """Panels (dataset, backbone, vectors); a "none" record (RandInit) joins every vector panel."""
    kinds = [v for v in (vector_order or []) if any(r["vectors"] == v for r in records)]
    kinds += sorted({r["vectors"] for r in records} - set(kinds) - {"none"})
    if not kinds:
        kinds = ["none"]
    panels = OrderedDict()
    for dataset in sorted({r["dataset"] for r in records}):
        for backbone in sorted({r["backbone"] for r in records if r["dataset"] == dataset}):
            for kind in kinds:
                recs = [
                    r
                    for r in records
                    if r["dataset"] == dataset and r["backbone"] == backbone and r["vectors"] in (kind, "none")
                ]
                if recs:
                    panels[(dataset, backbone, kind)] = recs
    return panels


def _methods(records, method_order):
    present = {r["method"] for r in records}
    ordered = [m for m in (method_order or []) if m in present]
    return ordered + sorted(present - set(ordered))


def _grid(plt, n, width=4.2, height=3.2):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _colors(methods):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _save(plt, fig, path):
    """Lay out, write (PNG, 120 dpi) and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_loss_curves(records, path, method_order=None, vector_order=None):
    """Figure-1 style: mean training loss per batch vs epoch, one line per method (band = min..max over seeds)."""
    plt = _plt()
    panels = _panels(records, vector_order)
    methods = _methods(records, method_order)
    colors = _colors(methods)
    fig, axes = _grid(plt, len(panels))
    for ax, ((dataset, backbone, kind), recs) in zip(axes, panels.items()):
        for method in methods:
            curves = [
                r["train_loss_per_batch"] for r in recs if r["method"] == method and r.get("train_loss_per_batch")
            ]
            if not curves:
                continue
            n = max(len(c) for c in curves)
            mat = np.full((len(curves), n), np.nan)
            for i, c in enumerate(curves):
                mat[i, : len(c)] = c
            x = np.arange(1, n + 1)
            ax.plot(x, np.nanmean(mat, axis=0), marker="o", ms=3, color=colors[method], label=method)
            if len(curves) > 1:
                ax.fill_between(x, np.nanmin(mat, axis=0), np.nanmax(mat, axis=0), color=colors[method], alpha=0.15)
        ax.set_title(f"{dataset} / {backbone} / vectors={kind}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (mean per batch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_longtail(records, path, method_order=None, vector_order=None):
    """Grouped bars: NDCG@10 per target-popularity bucket (b0 = least popular), mean over seeds."""
    plt = _plt()
    panels = _panels(records, vector_order)
    methods = _methods(records, method_order)
    colors = _colors(methods)
    fig, axes = _grid(plt, len(panels), width=5.0)
    for ax, ((dataset, backbone, kind), recs) in zip(axes, panels.items()):
        present = [m for m in methods if any(r["method"] == m for r in recs)]
        width = 0.8 / max(len(present), 1)
        n_buckets = 0
        for j, method in enumerate(present):
            mats = [[b["ndcg@10"] for b in r["longtail"]["buckets"]] for r in recs if r["method"] == method]
            mat = np.array(mats, dtype=float)
            n_buckets = mat.shape[1]
            x = np.arange(n_buckets) + (j - (len(present) - 1) / 2) * width
            ax.bar(
                x,
                np.nanmean(mat, axis=0),
                width,
                color=colors[method],
                label=method,
                yerr=np.nanstd(mat, axis=0) if len(mats) > 1 else None,
                capsize=1.5,
            )
        example = recs[0]["longtail"]["buckets"]
        ax.set_xticks(range(n_buckets))
        ax.set_xticklabels([f"b{b['bucket']}\n{b['pop_min']}-{b['pop_max']}" for b in example], fontsize=7)
        ax.set_title(f"{dataset} / {backbone} / vectors={kind}", fontsize=9)
        ax.set_xlabel("target popularity bucket (train count range)", fontsize=8)
        ax.set_ylabel("test NDCG@10")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_conditioning(records, path, method_order=None, vector_order=None):
    """Bars (log scale): mean Hessian condition number at initialisation and for the best model."""
    plt = _plt()
    panels = _panels(records, vector_order)
    methods = _methods(records, method_order)
    fig, axes = _grid(plt, len(panels), width=5.0)
    for ax, ((dataset, backbone, kind), recs) in zip(axes, panels.items()):
        present = [m for m in methods if any(r["method"] == m for r in recs)]
        x = np.arange(len(present))
        for offset, when, color in ((-0.2, "init", "#8da0cb"), (0.2, "end", "#fc8d62")):
            vals = defaultdict(list)
            for r in recs:
                v = ((r.get("conditioning") or {}).get(when) or {}).get("mean")  # none on candidate boards
                if v is not None:
                    vals[r["method"]].append(v)
            means = [np.mean(vals[m]) if vals[m] else np.nan for m in present]
            lo = [means[i] - np.min(vals[m]) if vals[m] else 0 for i, m in enumerate(present)]
            hi = [np.max(vals[m]) - means[i] if vals[m] else 0 for i, m in enumerate(present)]
            ax.bar(x + offset, means, 0.4, color=color, label=f"{when}", yerr=[lo, hi], capsize=2)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(present, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("mean κ(H) over 256 train rows")
        ax.set_title(f"{dataset} / {backbone} / vectors={kind}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, title="model", title_fontsize=7)
    return _save(plt, fig, path)


def write_plots(records, out_dir, method_order=None, vector_order=None):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_loss_curves(records, out_dir / "loss_curves.png", method_order, vector_order)]
    full_ranking = [r for r in records if r.get("longtail")]  # candidate boards have no long-tail or Hessian pass
    if full_ranking:
        paths.append(plot_longtail(full_ranking, out_dir / "longtail_ndcg10.png", method_order, vector_order))
        paths.append(plot_conditioning(full_ranking, out_dir / "conditioning.png", method_order, vector_order))
    return paths
