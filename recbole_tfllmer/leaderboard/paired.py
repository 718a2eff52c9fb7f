"""Per-test-user ranks stored compactly, and paired confidence intervals between methods.

Every cell stores the 1-based rank of each test user's target item (uint16, zlib, base64:
~30 KB for Amazon's 22k users), in the test loader's order, with a hash of the (user,
target) rows. Two cells of the same dataset and split have the same rows, so any per-user
metric (NDCG@k, HR@k for k < 65,535) can be compared user by user.

The interval for "method A minus method B" on a metric (means over seeds and users):

    D = mean_u ( mean_s m_A[s, u] - mean_s m_B[s, u] )
    Var(D) ~ Var_users + s_A^2 / S_A + s_B^2 / S_B

Var_users is the variance of D over test users, from a paired bootstrap over users of the
seed-averaged per-user difference (the same resampled users for both methods). s_X^2 is
the sample variance over seeds of method X's per-seed mean on the same users: training
randomness. (It also holds the user x seed interaction, a small part Var_users already
counts, so the interval errs on the wide side.) The interval is D +- t * sqrt(Var(D)),
with Welch-Satterthwaite degrees of freedom: with two or three seeds, a seed spread that
dominates gets few degrees of freedom and a wide t. With one seed per method the seed
spread cannot be estimated and the interval covers user sampling only (said as such).
"""

import base64
import hashlib
import math
import zlib

import numpy as np

RANK_CAP = np.iinfo(np.uint16).max  # ranks beyond are stored as the cap (no metric reads them)


def encode_ranks(ranks):
    ranks = np.minimum(np.asarray(ranks, dtype=np.int64), RANK_CAP).astype("<u2")
    return {
        "dtype": "uint16",
        "codec": "zlib+base64",
        "n": int(ranks.size),
        "cap": int(RANK_CAP),
        "data": base64.b64encode(zlib.compress(ranks.tobytes(), 9)).decode("ascii"),
    }


def decode_ranks(stored):
    raw = zlib.decompress(base64.b64decode(stored["data"]))
    ranks = np.frombuffer(raw, dtype="<u2").astype(np.int64)
    if ranks.size != stored["n"]:
        raise ValueError(f"stored ranks hold {ranks.size} values, expected {stored['n']}")
    return ranks


def rows_hash(users, targets):
    """Which (user, target) rows, in which order, the ranks belong to."""
    blob = np.stack([np.asarray(users, dtype=np.int64), np.asarray(targets, dtype=np.int64)]).tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def per_user_metric(ranks, metric):
    """Per-row values of "ndcg@k" or "hit@k" for one relevant item at 1-based `ranks`."""
    name, k = metric.split("@")
    k = int(k)
    ranks = np.asarray(ranks, dtype=np.float64)
    if name == "ndcg":
        return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
    if name == "hit":
        return (ranks <= k).astype(np.float64)
    raise ValueError(f"unknown per-user metric {metric!r}: use ndcg@k or hit@k")


def _t_quantile(df, level):
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df)) if math.isfinite(df) else float(stats.norm.ppf(0.5 + level / 2))


def paired_difference(a, b, level=0.95, n_boot=2000, seed=0):
    """Mean difference A - B with its interval; `a`, `b`: arrays (seeds x users) of per-user
    values on the same users (seeds need not match in number). See the module docstring."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"per-user arrays cover different users ({a.shape[1]} vs {b.shape[1]})")
    seed_sides = (a, b) if a.shape[0] > 1 and b.shape[0] > 1 else ()
    d_user = a.mean(axis=0) - b.mean(axis=0)
    return _difference(d_user, seed_sides, [int(a.shape[0]), int(b.shape[0])], level, n_boot, seed)


def difference_to_value(a, value, level=0.95, n_boot=2000, seed=0):
    """A's mean minus a fixed number (a published result on the same split), with the interval of
    A's side only: test-user sampling and, with two or more seeds, A's seed spread. The published
    number's own uncertainty is unknown here, so the interval is narrower than a comparison of
    two runs would be (the summary says so)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    seed_sides = (a,) if a.shape[0] > 1 else ()
    return _difference(a.mean(axis=0) - float(value), seed_sides, [int(a.shape[0])], level, n_boot, seed)


def _difference(d_user, seed_sides, n_seeds, level, n_boot, seed):
    """The interval of mean(d_user): bootstrap over users plus each side's seed spread (Welch t)."""
    n = d_user.size
    diff = float(d_user.mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    # paired: the same resampled users for both sides (the difference is resampled as one value)
    boot = np.concatenate(
        [d_user[rng.integers(0, n, (min(chunk, n_boot - i), n))].mean(axis=1) for i in range(0, n_boot, chunk)]
    )
    var_users = float(boot.var(ddof=1))
    parts = [(var_users, n - 1)]
    for x in seed_sides:
        parts.append((float(x.mean(axis=1).var(ddof=1)) / x.shape[0], x.shape[0] - 1))
    var = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    df = var * var / denom if denom > 0 else math.inf
    half = _t_quantile(df, level) * math.sqrt(var) if var > 0 else 0.0
    return {
        "diff": diff,
        "low": diff - half,
        "high": diff + half,
        "level": level,
        "df": df,
        "se_users": math.sqrt(var_users),
        "se_total": math.sqrt(var),
        "covers_seeds": bool(seed_sides),
        "n_users": int(n),
        "n_seeds": n_seeds,
        "excludes_zero": bool(diff - half > 0 or diff + half < 0),
    }


def same_test_rows(records):
    """True when every record stores per-user ranks and all of them rank the same (user, target)
    rows: only then can their per-user values be paired."""
    if not records or not all(r.get("test_ranks") for r in records):
        return False
    return len({r["test_ranks"]["rows_sha"] for r in records}) == 1


def per_user_values(records, metric):
    """(seeds x users) array of `metric` for the cells of one method, or None when a cell has
    no stored ranks (cells written before ranks were recorded) or the cells' rows differ."""
    if not same_test_rows(records):
        return None
    return np.stack([per_user_metric(decode_ranks(r["test_ranks"]), metric) for r in records])


def compare_methods(groups, metric, baseline_of=None, level=0.95):
    """Paired intervals for each entry of one comparable group (same dataset, backbone and test
    rows): against the best other entry (by mean) and against its baseline.

    `groups`: {label: [cell records of that method]}; `baseline_of(label)` names the label to
    compare with as the baseline (e.g. LLMInit with the same vectors), or None. Returns {label:
    {"mean", "best_other", "vs_best_other", "baseline", "vs_baseline", "first", "ahead"}}: "first"
    is True only for the best mean whose interval against the runner-up excludes zero *and* covers
    the seed spread (two or more seeds on both sides); with one seed on a side an interval that
    excludes zero covers user sampling only, and the best mean is only "ahead". {} when a cell
    carries no per-user ranks or the cells were evaluated on different rows."""
    values = {label: per_user_values(recs, metric) for label, recs in groups.items()}
    if not values or any(v is None for v in values.values()):
        return {}
    if not same_test_rows([r for recs in groups.values() for r in recs]):
        return {}
    means = {label: float(v.mean()) for label, v in values.items()}
    ranked = sorted(means, key=lambda label: -means[label])
    out = {}
    for label in ranked:
        others = [o for o in ranked if o != label]
        base = baseline_of(label) if baseline_of else None
        base = base if base in values and base != label else None
        out[label] = {
            "mean": means[label],
            "best_other": others[0] if others else None,
            "vs_best_other": paired_difference(values[label], values[others[0]], level=level) if others else None,
            "baseline": base,
            "vs_baseline": paired_difference(values[label], values[base], level=level) if base else None,
            "first": False,
            "ahead": False,
        }
    top = out[ranked[0]]
    clear = bool(top["vs_best_other"] and top["vs_best_other"]["low"] > 0)
    top["first"] = clear and top["vs_best_other"]["covers_seeds"]
    top["ahead"] = clear and not top["vs_best_other"]["covers_seeds"]
    return out
