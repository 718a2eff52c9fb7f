"""`--compare A:B`: the paired difference of any two methods of a board, from its cells.

Synthetic cells of known effect check the arithmetic and the choices (sides, vector kinds, one
seed, missing ranks); the committed ml-100k converged board checks the command end to end against
the summary's own paired.csv (the same interval must come out of both)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from recbole_tfllmer.leaderboard.command import main
from recbole_tfllmer.leaderboard.compare import compare_pairs, format_rows, parse_pair
from recbole_tfllmer.leaderboard.paired import encode_ranks
from recbole_tfllmer.leaderboard.spec import SpecError

REPO = Path(__file__).resolve().parents[1]


def _cells(method, vectors, hit_rates, rng, n=4000, backbone="B", sha="rows"):
    """One cell per seed; a user's target is at rank 1 with probability `rate`, else at rank 50."""
    return [
        {
            "cell_id": f"{method}-{vectors}-{backbone}-{seed}",
            "dataset": "D",
            "backbone": backbone,
            "method": method,
            "vectors": vectors,
            "seed": 2020 + seed,
            "test_ranks": {**encode_ranks(np.where(rng.random(n) < rate, 1, 50)), "rows_sha": sha},
        }
        for seed, rate in enumerate(hit_rates)
    ]


def test_parse_pair_reads_methods_and_vector_kinds():
    assert parse_pair("TFLLMER:NormOnly") == (("TFLLMER", None), ("NormOnly", None))
    assert parse_pair(" LLMInit/raw : LLMInit/st ") == (("LLMInit", "raw"), ("LLMInit", "st"))
    for bad in ("TFLLMER", "A:B:C", ":B", "A: "):
        with pytest.raises(SpecError, match="write METHOD_A:METHOD_B"):
            parse_pair(bad)


def test_a_known_gap_is_measured_and_a_null_one_is_tied():
    rng = np.random.default_rng(0)
    records = (
        _cells("TFLLMER", "st", [0.30, 0.31, 0.29], rng)
        + _cells("NormOnly", "st", [0.20, 0.21, 0.19], rng)
        + _cells("LLMInit", "st", [0.20, 0.20, 0.21], rng)
    )
    big, null = compare_pairs(records, ["TFLLMER:NormOnly", "LLMInit:NormOnly"], "hit@10")
    assert (big["a"], big["b"], big["seeds_a"]) == ("TFLLMER/st", "NormOnly/st", [2020, 2021, 2022])
    assert big["low"] > 0.05 and big["high"] < 0.15 and big["low"] <= big["diff"] <= big["high"]
    assert big["excludes_zero"] and big["covers_seeds"] and big["n_users"] == 4000
    assert null["low"] < 0 < null["high"] and not null["excludes_zero"]
    lines = format_rows([big, null])
    assert "D B hit@10: TFLLMER/st - NormOnly/st (seeds 2020,2021,2022 vs 2020,2021,2022): +0.1" in lines[0]
    assert lines[0].endswith("over 4000 test users, excludes zero")
    assert lines[1].endswith("includes zero (tied)")


def test_each_backbone_is_its_own_row_and_absent_sides_are_skipped():
    rng = np.random.default_rng(1)
    records = (
        _cells("A", "st", [0.3, 0.3], rng, backbone="GRU4Rec")
        + _cells("B", "none", [0.2, 0.2], rng, backbone="GRU4Rec")
        + _cells("A", "st", [0.3], rng, backbone="SASRec")
    )
    rows = compare_pairs(records, ["A:B"], "hit@10", methods=["A", "B"])
    assert [r["backbone"] for r in rows] == ["GRU4Rec"]  # SASRec has no B cell yet
    assert format_rows([]) == [
        "no dataset and backbone of the selected cells has both sides of any --compare pair finished"
    ]


def test_one_seed_on_a_side_is_said():
    rng = np.random.default_rng(2)
    records = _cells("A", "st", [0.30], rng) + _cells("B", "st", [0.20, 0.21], rng)
    (row,) = compare_pairs(records, ["A:B"], "hit@10")
    assert not row["covers_seeds"]
    assert "¹ one seed on a side: test-user sampling only" in format_rows([row])[0]


def test_several_vector_kinds_must_be_named_and_unknown_methods_are_errors():
    rng = np.random.default_rng(3)
    records = _cells("LLMInit", "st", [0.3, 0.3], rng) + _cells("LLMInit", "raw", [0.2, 0.2], rng)
    with pytest.raises(SpecError, match=r"has LLMInit with several vector kinds; name one \(LLMInit/raw, LLMInit/st\)"):
        compare_pairs(records, ["LLMInit:LLMInit/raw"], "hit@10")
    (row,) = compare_pairs(records, ["LLMInit/st:LLMInit/raw"], "hit@10")
    assert row["diff"] > 0.05
    with pytest.raises(SpecError, match=r"'LLMinit' is not a method of this board \(LLMInit\)"):
        compare_pairs(records, ["LLMinit:LLMInit/raw"], "hit@10", methods=["LLMInit"])
    with pytest.raises(SpecError, match=r"--metric 'mrr@10': choose one of ndcg@10"):
        compare_pairs(records, ["LLMInit/st:LLMInit/raw"], "mrr@10")


def test_cells_on_other_rows_or_without_ranks_get_no_interval():
    rng = np.random.default_rng(4)
    other_rows = _cells("A", "st", [0.3], rng) + _cells("B", "st", [0.2], rng, sha="other")
    no_ranks = _cells("A", "st", [0.3], rng) + [{**c, "test_ranks": None} for c in _cells("B", "st", [0.2], rng)]
    for records in (other_rows, [{k: v for k, v in c.items() if v is not None} for c in no_ranks]):
        (row,) = compare_pairs(records, ["A:B"], "hit@10")
        assert "diff" not in row and "no paired interval" in format_rows([row])[0]


def test_the_command_reproduces_the_summary_interval_on_the_committed_board(capsys, monkeypatch):
    """The same pair through `--compare` and through the board summary's paired.csv."""
    monkeypatch.chdir(REPO)
    with open(REPO / "results" / "ml-100k-converged" / "paired.csv", newline="") as f:
        row = next(
            r for r in csv.DictReader(f) if r["backbone"] == "GRU4Rec" and r["metric"] == "ndcg@10" and r["baseline"]
        )
    a, b = f"{row['method']}/{row['vectors']}", row["baseline"]
    rc = main(
        ["--config", "leaderboards/ml-100k-converged.yaml", "--compare", f"{a}:{b}", "--only", "backbone=GRU4Rec"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    expected = (
        f"{float(row['baseline_diff']):+.4f} [{float(row['baseline_low']):+.4f}, {float(row['baseline_high']):+.4f}]"
    )
    assert out[0].startswith(f"ml-100k GRU4Rec ndcg@10: {a} - {b} (seeds 2020,2021,2022 vs 2020,2021,2022): {expected}")
