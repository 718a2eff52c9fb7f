"""Paired differences between any two methods of a board, read from its finished cells.

The summary compares each method with the best other one and with LLMInit; a reader also wants
"LLMEmb minus RandInit" or "TF-LLMER minus NormOnly". `--compare A:B` prints those with the same
interval (paired.py: bootstrap over test users plus each side's seed spread), so every difference
the README quotes comes from a command anyone can rerun:

    python -m recbole_tfllmer.leaderboard --config leaderboards/Amazon_Beauty-converged.yaml \
        --compare LLMEmb:RandInit --compare TFLLMER:NormOnly --only backbone=GRU4Rec

A side is a method (`LLMInit`) or a method with its vector kind (`LLMInit/raw`) where the board has
that method with several kinds. Each side uses every finished seed of its cells; the seeds of the two
sides need not be the same.
"""

from recbole_tfllmer.leaderboard.paired import paired_difference, per_user_values, same_test_rows
from recbole_tfllmer.leaderboard.spec import SpecError
from recbole_tfllmer.leaderboard.summary import METRICS, by_dataset_backbone


def parse_pair(text):
    """'A:B' -> ((method, vectors or None), (method, vectors or None))."""
    parts = str(text).split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise SpecError(f"--compare {text!r}: write METHOD_A:METHOD_B (e.g. TFLLMER:NormOnly, LLMInit/raw:LLMInit/st)")

    def side(p):
        method, _, vectors = p.strip().partition("/")
        return method.strip(), (vectors.strip() or None)

    return side(parts[0]), side(parts[1])


def _pick(by_label, side, where, pair_text):
    """The (vectors, method) label of one side in one dataset/backbone group, or None if absent."""
    method, vectors = side
    labels = [label for label in by_label if label[1] == method and vectors in (None, label[0])]
    if len(labels) > 1:
        kinds = ", ".join(f"{method}/{v}" for v, _ in sorted(labels))
        raise SpecError(f"--compare {pair_text}: {where} has {method} with several vector kinds; name one ({kinds})")
    return labels[0] if labels else None


def compare_pairs(records, pairs, metric="ndcg@10", methods=None):
    """One row per (dataset, backbone, pair) where both sides have finished cells with per-user
    ranks on the same test rows: the paired difference A - B and its interval, or why not.
    `methods`: the board's methods, so that a misspelt side is an error, not an empty answer."""
    if metric not in METRICS:
        raise SpecError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    parsed = [(text, *parse_pair(text)) for text in pairs]
    for text, *sides in parsed:
        unknown = [m for m, _ in sides if methods is not None and m not in methods]
        if unknown:
            raise SpecError(f"--compare {text}: {unknown[0]!r} is not a method of this board ({', '.join(methods)})")
    rows = []
    for (dataset, backbone), by_label in sorted(by_dataset_backbone(records).items()):
        where = f"{dataset} {backbone}"
        for text, a_side, b_side in parsed:
            a, b = _pick(by_label, a_side, where, text), _pick(by_label, b_side, where, text)
            if a is None or b is None:
                continue
            row = {
                "dataset": dataset,
                "backbone": backbone,
                "metric": metric,
                "a": f"{a[1]}/{a[0]}",
                "b": f"{b[1]}/{b[0]}",
                "seeds_a": sorted(r["seed"] for r in by_label[a]),
                "seeds_b": sorted(r["seed"] for r in by_label[b]),
            }
            values_a, values_b = per_user_values(by_label[a], metric), per_user_values(by_label[b], metric)
            if values_a is None or values_b is None or not same_test_rows(by_label[a] + by_label[b]):
                row["note"] = "no per-user ranks on the same test rows in these cells: no paired interval"
            else:
                row.update(paired_difference(values_a, values_b))
            rows.append(row)
    return rows


def format_rows(rows):
    """Text lines, one per row; ¹ where a side has one seed (the interval covers test users only)."""
    if not rows:
        return ["no dataset and backbone of the selected cells has both sides of any --compare pair finished"]
    lines = []
    for r in rows:
        head = (
            f"{r['dataset']} {r['backbone']} {r['metric']}: {r['a']} - {r['b']} "
            f"(seeds {','.join(map(str, r['seeds_a']))} vs {','.join(map(str, r['seeds_b']))})"
        )
        if "diff" not in r:
            lines.append(f"{head}: {r['note']}")
            continue
        verdict = "excludes zero" if r["excludes_zero"] else "includes zero (tied)"
        if not r["covers_seeds"]:
            verdict += "; ¹ one seed on a side: test-user sampling only"
        lines.append(
            f"{head}: {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] over {r['n_users']} test users, {verdict}"
        )
    return lines
