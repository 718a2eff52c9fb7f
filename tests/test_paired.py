"""Paired intervals between methods: stored ranks, coverage on synthetic data of known effect,
and "first" only where the interval excludes zero."""

import numpy as np
import pytest

from recbole_tfllmer.leaderboard.paired import (
    compare_methods,
    decode_ranks,
    difference_to_value,
    encode_ranks,
    paired_difference,
    per_user_metric,
    rows_hash,
)
from recbole_tfllmer.leaderboard.summary import anchor_rows, paired_comparisons, to_markdown


def synthetic(rng, effect, n_users=1000, seeds=3, user_sd=0.3, seed_sd=0.004, noise_sd=0.2):
    """Per-user values of two methods on the same users: shared user difficulty (the pairing),
    a per-(method, seed) training effect, per-(user, seed) noise; A - B has mean `effect`."""
    user = rng.normal(0, user_sd, n_users)

    def method(shift):
        return user + shift + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, noise_sd, (seeds, n_users))

    return method(effect), method(0.0)


@pytest.mark.parametrize("seed_sd", [0.0, 0.004, 0.015])
def test_interval_covers_the_true_difference_at_its_level(seed_sd):
    rng = np.random.default_rng(0)
    effect, reps, covered = 0.01, 300, 0
    for rep in range(reps):
        a, b = synthetic(rng, effect, seed_sd=seed_sd)
        # the true mean difference of this draw's populations is `effect`
        d = paired_difference(a, b, n_boot=400, seed=rep)
        covered += d["low"] <= effect <= d["high"]
    assert 0.91 <= covered / reps <= 0.99


def test_user_sampling_alone_undercovers_when_seeds_vary():
    """Why the seed spread is in the interval: without it, seed-to-seed variation that is large
    against user noise gives far too narrow intervals."""
    rng = np.random.default_rng(1)
    effect, reps, covered = 0.01, 200, 0
    for rep in range(reps):
        a, b = synthetic(rng, effect, seed_sd=0.015)
        d = paired_difference(a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True), n_boot=400, seed=rep)
        assert not d["covers_seeds"]
        covered += d["low"] <= effect <= d["high"]
    assert covered / reps < 0.85


def test_pairing_narrows_the_interval_and_zero_effect_rarely_excludes_zero():
    rng = np.random.default_rng(2)
    a, b = synthetic(rng, 0.0, seed_sd=0.0, user_sd=1.0)
    paired = paired_difference(a, b, n_boot=400)
    unpaired = paired_difference(a, b[:, rng.permutation(b.shape[1])], n_boot=400)
    assert paired["se_users"] < 0.5 * unpaired["se_users"]
    false_positives = sum(
        paired_difference(*synthetic(rng, 0.0), n_boot=300, seed=i)["excludes_zero"] for i in range(200)
    )
    assert false_positives / 200 <= 0.10


def test_ranks_round_trip_and_per_user_metrics():
    ranks = np.array([1, 2, 10, 11, 70000, 3])
    stored = encode_ranks(ranks)
    back = decode_ranks(stored)
    assert back.tolist() == [1, 2, 10, 11, 65535, 3]
    assert per_user_metric(back, "hit@10").tolist() == [1, 1, 1, 0, 0, 1]
    assert per_user_metric(back, "ndcg@10")[:2] == pytest.approx([1.0, 1 / np.log2(3)])
    assert rows_hash([1, 2], [3, 4]) != rows_hash([2, 1], [3, 4])


def _cells(method, vectors, rank_rows, sha="s"):
    return [
        {
            "cell_id": f"{method}{i}",
            "dataset": "D",
            "backbone": "B",
            "method": method,
            "vectors": vectors,
            "seed": i,
            "test_ranks": {**encode_ranks(r), "rows_sha": sha},
        }
        for i, r in enumerate(rank_rows)
    ]


def test_first_only_where_the_interval_excludes_zero():
    rng = np.random.default_rng(3)
    n = 3000
    strong = [np.where(rng.random(n) < 0.30, 1, 50) for _ in range(2)]  # HR@10 ~ 0.30
    weak = [np.where(rng.random(n) < 0.20, 1, 50) for _ in range(2)]  # ~ 0.20
    twin = [np.where(rng.random(n) < 0.20, 1, 50) for _ in range(2)]  # same as weak
    clear = compare_methods(
        {("st", "TFLLMER"): _cells("TFLLMER", "st", strong), ("st", "LLMInit"): _cells("LLMInit", "st", weak)},
        "hit@10",
        baseline_of=lambda label: (label[0], "LLMInit"),
    )
    assert clear[("st", "TFLLMER")]["first"] and not clear[("st", "LLMInit")]["first"]
    assert clear[("st", "TFLLMER")]["vs_baseline"]["low"] > 0
    tied = compare_methods({("st", "A"): _cells("A", "st", weak), ("st", "B"): _cells("B", "st", twin)}, "hit@10")
    assert not any(e["first"] for e in tied.values())
    # cells evaluated on different rows are never paired
    assert (
        compare_methods(
            {("st", "A"): _cells("A", "st", weak, "x"), ("st", "B"): _cells("B", "st", twin, "y")}, "hit@10"
        )
        == {}
    )


def test_markdown_bolds_only_a_significant_first():
    rng = np.random.default_rng(4)
    n = 3000
    records = _cells("TFLLMER", "st", [np.where(rng.random(n) < 0.30, 1, 50) for _ in range(2)]) + _cells(
        "LLMInit", "st", [np.where(rng.random(n) < 0.295, 1, 50) for _ in range(2)]
    )
    for r in records:
        hr = float((decode_ranks(r["test_ranks"]) <= 10).mean())
        r["test"] = {"ndcg@10": hr, "ndcg@20": hr, "hit@10": hr, "hit@20": hr}
    from recbole_tfllmer.leaderboard.summary import aggregate

    rows = aggregate(records)
    comparisons = paired_comparisons(records)
    md = to_markdown(rows, comparisons=comparisons)
    assert "paired differences" in md and "**" not in md.split("###")[0]  # a 0.005 gap on 3000 users: tied
    assert "best mean, tied" in md


@pytest.mark.parametrize("seeds", [1, 3])
def test_distance_to_a_published_value_covers_the_true_distance(seeds):
    """Our side's interval against a fixed number: coverage at its level, with and without a
    seed spread (with one seed there is none to estimate, and the draws below have none)."""
    rng = np.random.default_rng(5)
    true_mean, published, reps, covered = 0.05, 0.045, 300, 0
    for rep in range(reps):
        seed_sd = 0.004 if seeds > 1 else 0.0
        a = true_mean + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, 0.2, (seeds, 1000))
        d = difference_to_value(a, published, n_boot=400, seed=rep)
        assert d["covers_seeds"] == (seeds > 1)
        covered += d["low"] <= true_mean - published <= d["high"]
    assert 0.91 <= covered / reps <= 0.99


def test_anchor_rows_measure_each_matching_method_and_say_what_has_not_run():
    rng = np.random.default_rng(6)
    n = 4000
    records = _cells("LLMInit", "st", [np.where(rng.random(n) < 0.30, 1, 50) for _ in range(2)])
    anchors = [
        {"dataset": "D", "backbone": "B", "method": "LLMInit", "metric": "hit@10", "value": 0.25, "source": "paper"},
        {"dataset": "D", "backbone": "B", "method": "TFLLMER", "metric": "hit@10", "value": 0.25, "source": "paper"},
    ]
    measured, missing = anchor_rows(records, anchors)
    assert measured["seeds"] == 2 and measured["vectors"] == "st" and measured["covers_seeds"]
    assert measured["ours"] == pytest.approx(0.30, abs=0.02)
    assert measured["diff"] == pytest.approx(measured["ours"] - 0.25)
    assert measured["low"] > 0  # 0.30 against 0.25 on 4000 users: clearly above
    assert missing["seeds"] == 0 and np.isnan(missing["ours"])
    md = to_markdown([], anchors=[measured, missing])
    assert md == to_markdown([])  # no dataset rows: no dataset sections, so no anchor section either
    from recbole_tfllmer.leaderboard.summary import anchor_section

    section = "\n".join(anchor_section("D", [measured, missing]))
    assert "| B | LLMInit | st | HR@10 | 0.2500 | paper | 2 | 0.3" in section
    assert "| B | TFLLMER | — | HR@10 | 0.2500 | paper | 0 | not run yet | not run yet |" in section


def test_one_seed_a_side_is_ahead_not_first_and_randinit_meets_llminit():
    """An interval from one seed a side covers user sampling only: a clear gap there is "ahead",
    never "first". A method without vectors is compared with the board's only LLMInit."""
    rng = np.random.default_rng(7)
    n = 3000
    records = _cells("LLMInit", "st", [np.where(rng.random(n) < 0.30, 1, 50)]) + _cells(
        "RandInit", "none", [np.where(rng.random(n) < 0.20, 1, 50)]
    )
    for r in records:
        hr = float((decode_ranks(r["test_ranks"]) <= 10).mean())
        r["test"] = {"ndcg@10": hr, "ndcg@20": hr, "hit@10": hr, "hit@20": hr}
    comp = paired_comparisons(records)[("D", "B", "hit@10")]
    top = comp[("st", "LLMInit")]
    assert top["vs_best_other"]["low"] > 0 and not top["vs_best_other"]["covers_seeds"]
    assert top["ahead"] and not top["first"]
    rand = comp[("none", "RandInit")]
    assert rand["baseline"] == ("st", "LLMInit") and rand["vs_baseline"]["diff"] < 0
    from recbole_tfllmer.leaderboard.summary import aggregate

    md = to_markdown(aggregate(records), comparisons=paired_comparisons(records))
    assert "ahead ¹ (one seed: not a claim)" in md and "**first**" not in md
