"""Leaderboard: aggregation/markdown, resume, atomic cell files, long-tail buckets, one real tiny cell."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from recbole_tfllmer.leaderboard import command
from recbole_tfllmer.leaderboard.longtail import bucket_metrics, hit_at_k, ndcg_at_k, popularity_buckets
from recbole_tfllmer.leaderboard.spec import (
    METHOD_DIR,
    NO_VECTORS,
    Cell,
    SpecError,
    cell_matches,
    parse_only,
    spec_from_dict,
)
from recbole_tfllmer.leaderboard.store import CellStore, atomic_write_json
from recbole_tfllmer.leaderboard.summary import _cell as _cell_text
from recbole_tfllmer.leaderboard.summary import aggregate, best_flags, mean_std, to_csv, to_markdown

REPO = Path(__file__).resolve().parents[1]


def fake_record(method, seed, ndcg10, vectors="st", backbone="GRU4Rec", dataset="ml-100k", cond=(100.0, 50.0)):
    return {
        "status": "done",
        "cell_id": Cell(dataset, backbone, method, vectors, seed).cell_id,
        "dataset": dataset,
        "backbone": backbone,
        "method": method,
        "vectors": vectors,
        "seed": seed,
        "test": {"ndcg@10": ndcg10, "ndcg@20": ndcg10 + 0.01, "hit@10": 2 * ndcg10, "hit@20": 3 * ndcg10},
        "best_valid": {"ndcg@10": ndcg10 / 2},
        "conditioning": {"init": {"mean": cond[0], "median": cond[0]}, "end": {"mean": cond[1], "median": cond[1]}},
        "train_loss_per_batch": [7.0, 6.5, 6.2],
        "epochs_run": 3,
        "best_epoch": 2,
        "epoch_train_seconds": [1.0, 1.0, 1.0],
        "timings": {"fit_seconds": 3.0, "embedding_seconds": 0.1, "graph_seconds": 0.01, "rec_pca_seconds": 0.02},
        "memory": {"peak_rss_mb": 500.0},
        "longtail": {
            "buckets": [
                {"bucket": b, "n": 2, "pop_min": b, "pop_max": b, "ndcg@10": ndcg10 * b, "hit@10": 0.0}
                for b in range(5)
            ]
        },
    }


def tiny_spec(tmp_path, methods=("RandInit", "TFLLMER"), seeds=(1, 2)):
    return spec_from_dict(
        {
            "name": "tiny",
            "protocol": "Leave-one-out, full ranking.",
            "datasets": {"ml-100k": {"properties": str(REPO / "properties" / "ml-100k.yaml")}},
            "backbones": ["GRU4Rec"],
            "methods": list(methods),
            "seeds": list(seeds),
            "vector_kinds": ["st", "raw"],
            "overrides": {"epochs": 1},
        },
        tmp_path / "tiny.yaml",
    )


# -- aggregation and outputs -----------------------------------------------------------------
def test_mean_std_over_seeds():
    mean, std = mean_std([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert std == pytest.approx(0.1)  # sample std (ddof=1)
    mean, std = mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)  # one seed: no "± 0" in the tables
    assert _cell_text(0.5, std, bold=False) == "0.5000"
    assert all(math.isnan(v) for v in mean_std([None, float("nan")]))


def test_aggregate_groups_seeds_and_orders_methods():
    records = [fake_record("TFLLMER", s, v) for s, v in [(1, 0.10), (2, 0.20), (3, 0.30)]]
    records += [fake_record("RandInit", s, v, vectors=NO_VECTORS) for s, v in [(1, 0.05), (2, 0.07)]]
    rows = aggregate(records, method_order=["RandInit", "TFLLMER"], vector_order=["st"])
    assert [(r["method"], r["n_seeds"]) for r in rows] == [("RandInit", 2), ("TFLLMER", 3)]
    tf = rows[1]
    assert tf["test_ndcg@10_mean"] == pytest.approx(0.2)
    assert tf["test_ndcg@10_std"] == pytest.approx(0.1)
    assert tf["test_hit@10_mean"] == pytest.approx(0.4)
    assert tf["seeds"] == "1 2 3"
    assert tf["cond_init_mean"] == pytest.approx(100.0)
    assert tf["longtail_b4_ndcg@10_mean"] == pytest.approx(0.8)


def test_markdown_bolds_best_per_column_and_states_protocol():
    records = [fake_record("TFLLMER", s, 0.2) for s in (1, 2)]
    records += [fake_record("LLMInit", s, 0.1) for s in (1, 2)]
    rows = aggregate(records, method_order=["LLMInit", "TFLLMER"])
    md = to_markdown(rows, "Board", "Full ranking, leave-one-out.")
    assert md.index("## Protocol") < md.index("| Method")
    assert "Full ranking, leave-one-out." in md
    tf_line = next(line for line in md.splitlines() if line.startswith("| TFLLMER"))
    ll_line = next(line for line in md.splitlines() if line.startswith("| LLMInit"))
    assert "**0.2000 ± 0.0000**" in tf_line  # NDCG@10: TFLLMER best
    assert "**" not in ll_line
    # ties are all bold
    assert best_flags([{"c": 0.1}, {"c": 0.1}, {"c": 0.05}], "c") == {0, 1}
    assert best_flags([{"c": 0.1}, {"c": 0.05}], "c", bigger=False) == {1}


def test_diagnostics_show_rec_pca_geometry_relative_to_pca():
    records = [fake_record("TFLLMER", s, 0.2) for s in (1, 2)] + [fake_record("LLMInit", s, 0.1) for s in (1, 2)]
    for r in records[:2]:  # what the wrapper's InitReport stores for a Rec-PCA run
        r["tfllmer_info"] = {
            "rec_pca_retained_variance": 0.6,
            "rec_pca_retained_variance_pca": 0.75,
            "rec_pca_tv_ratio": 0.5,
            "rec_pca_tv_ratio_pca": 0.8,
        }
    md = to_markdown(aggregate(records, method_order=["LLMInit", "TFLLMER"]), "Board", "p")
    header = next(line for line in md.splitlines() if line.startswith("| Backbone | Method | Vectors | κ(H) init"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [line for line in md.splitlines() if line.startswith("| GRU4Rec |") and "κ" not in line]
    tf_row = [c.strip() for c in next(r for r in rows if "| TFLLMER |" in r).strip("|").split("|")]
    ll_row = [c.strip() for c in next(r for r in rows if "| LLMInit |" in r).strip("|").split("|")]
    kept, tv = columns.index("kept var / PCA"), columns.index("TV/var / PCA")
    assert (tf_row[kept], tf_row[tv]) == ("0.80", "0.62")  # 0.6 / 0.75 and 0.5 / 0.8
    assert ll_row[kept] == ll_row[tv] == ""  # no Rec-PCA, no geometry


def test_csv_has_one_row_per_group_with_means():
    rows = aggregate([fake_record("TFLLMER", s, v) for s, v in [(1, 0.1), (2, 0.3)]])
    text = to_csv(rows)
    header, line = text.strip().splitlines()
    fields = dict(zip(header.split(","), line.split(",")))
    assert fields["method"] == "TFLLMER" and fields["n_seeds"] == "2"
    assert float(fields["test_ndcg@10_mean"]) == pytest.approx(0.2)
    assert float(fields["test_ndcg@10_std"]) == pytest.approx(math.sqrt(0.02))


# -- spec, filters ---------------------------------------------------------------------------
def test_spec_cells_random_init_has_no_vector_kind(tmp_path):
    spec = tiny_spec(tmp_path)
    ids = {c.cell_id for c in spec.cells()}
    assert "ml-100k__GRU4Rec__RandInit__none__seed1" in ids
    assert "ml-100k__GRU4Rec__TFLLMER__raw__seed2" in ids
    assert len(ids) == 2 * (1 + 2)
    files, config = spec.cell_inputs(Cell("ml-100k", "GRU4Rec", "TFLLMER", "raw", 1))
    assert files[-1].endswith("TFLLMER.yaml")
    assert config["text_encoder_type"] == "transformers" and config["text_normalize"] is False
    assert config["backbone"] == "GRU4Rec" and config["seed"] == 1 and config["epochs"] == 1
    assert spec.fingerprint(Cell("ml-100k", "GRU4Rec", "TFLLMER", "raw", 1)) != spec.fingerprint(
        Cell("ml-100k", "GRU4Rec", "TFLLMER", "st", 1)
    )


def _board(tmp_path, **extra):
    raw = {
        "datasets": {"ml-100k": {"properties": str(REPO / "properties" / "ml-100k.yaml")}},
        "backbones": ["SASRec"],
        "methods": ["RandInit", "LLMInit"],
        "seeds": [1],
        **extra,
    }
    return spec_from_dict(raw, tmp_path / "b.yaml")


def test_anchors_are_checked_against_the_board_and_leave_fingerprints_alone(tmp_path):
    good = {"dataset": "ml-100k", "backbone": "SASRec", "method": "LLMInit", "metric": "ndcg@10", "value": 0.05,
            "source": "a paper"}  # fmt: skip
    plain, anchored = _board(tmp_path), _board(tmp_path, anchors=[good])
    assert anchored.anchors == [good]
    cell = Cell("ml-100k", "SASRec", "LLMInit", "st", 1)
    assert plain.fingerprint(cell) == anchored.fingerprint(cell)  # a reading aid: no cell goes stale
    for change, message in [
        ({"method": "LLMEmb"}, r"b.yaml: anchors\[0\]: method 'LLMEmb' is not on the board"),
        ({"backbone": "GRU4Rec"}, r"anchors\[0\]: backbone 'GRU4Rec' is not on the board"),
        ({"metric": "mrr@10"}, r"anchors\[0\]: metric 'mrr@10' is not reported; use one of"),
        ({"value": 5.2}, r"anchors\[0\]: value 5.2 must be a number in \(0, 1\]"),
        ({"source": " "}, r"anchors\[0\]: give the `source`"),
        ({"year": 2024}, r"anchors\[0\]: give exactly the fields"),
    ]:
        with pytest.raises(SpecError, match=message):
            _board(tmp_path, anchors=[{**good, **change}])
    with pytest.raises(SpecError, match=r"`anchors` must be a list"):
        _board(tmp_path, anchors=good)


def test_a_misspelt_board_key_is_refused_not_ignored(tmp_path):
    with pytest.raises(SpecError, match=r"b.yaml: unknown key\(s\) \['overides'\]; a board yaml takes"):
        _board(tmp_path, overides={"epochs": 1})


def test_only_filters():
    cell = Cell("ml-100k", "SASRec", "TFLLMER", "st", 2020)
    assert cell_matches(cell, parse_only(["method=TFLLMER,NormOnly", "seed=2020"]))
    assert not cell_matches(cell, parse_only(["backbone=GRU4Rec"]))
    assert cell_matches(cell, parse_only(["SASRec"]))


def test_presets_ship_with_the_package_and_paths_resolve_beside_the_yaml_then_the_cwd(tmp_path, monkeypatch):
    import recbole_tfllmer

    assert METHOD_DIR == Path(recbole_tfllmer.__file__).resolve().parent / "properties" / "method"
    spec = tiny_spec(tmp_path)
    assert Path(spec.method_file("TFLLMER")).parent == METHOD_DIR
    # an unknown method names the board and lists the shipped presets
    with pytest.raises(SpecError, match=r"tiny.yaml: method 'Nope' has no preset .*RandInit, RecPCAOnly, TFLLMER"):
        tiny_spec(tmp_path, methods=("Nope",))

    board_dir, run_dir = tmp_path / "boards", tmp_path / "run"
    (board_dir / "props").mkdir(parents=True)
    (run_dir / "props").mkdir(parents=True)
    (run_dir / "data").mkdir()
    (run_dir / "mine").mkdir()
    (run_dir / "mine" / "Mine.yaml").write_text("item_init: random\n")
    for d in (board_dir, run_dir):
        (d / "props" / "ds.yaml").write_text("dataset: ds\n")
    monkeypatch.chdir(run_dir)
    raw = {
        "datasets": {"ds": {"properties": "props/ds.yaml", "overrides": {"data_path": "data"}}},
        "backbones": ["GRU4Rec"],
        "methods": ["Mine"],
        "seeds": [1],
        "method_dir": "mine",
    }
    spec = spec_from_dict(raw, board_dir / "b.yaml")
    assert spec.datasets["ds"]["properties"] == (board_dir / "props" / "ds.yaml").resolve()  # beside the yaml
    assert spec.datasets["ds"]["overrides"]["data_path"] == str((run_dir / "data").resolve()) + os.sep  # cwd
    assert spec.method_dir == (run_dir / "mine").resolve()
    assert spec.method_file("Mine") == (run_dir / "mine" / "Mine.yaml").resolve()
    assert spec.method_file("LLMInit").name == "LLMInit.yaml"  # not in method_dir: the shipped preset
    with pytest.raises(
        SpecError, match=r"method 'Nope' has no preset .*mine.Nope.yaml; presets in .*: .*LLMInit.*Mine"
    ):
        spec.method_file("Nope")
    assert spec.results_dir() == run_dir.absolute() / "results" / "b"
    assert spec.results_dir("elsewhere") == run_dir.absolute() / "elsewhere" / "b"
    raw["datasets"]["ds"]["properties"] = "props/missing.yaml"
    with pytest.raises(SpecError, match=r"b.yaml: dataset 'ds': no properties file .*missing.yaml"):
        spec_from_dict(raw, board_dir / "b.yaml")


def test_summary_without_matplotlib_still_writes_md_and_csv(tmp_path, monkeypatch, capsys):
    import sys

    from recbole_tfllmer.leaderboard.summary import write_summary

    spec = tiny_spec(tmp_path, methods=("RandInit",), seeds=(1,))
    store = CellStore(tmp_path / "results" / "tiny")
    cell = spec.cells()[0]
    record = fake_record("RandInit", 1, 0.1, vectors=NO_VECTORS)
    record["fingerprint"] = spec.fingerprint(cell)
    store.write(cell.cell_id, record)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    _, written = write_summary(spec, store, plots=True)
    assert {p.name for p in written} == {"leaderboard.csv", "cells.csv", "leaderboard.md"}
    assert "pip install recbole-tfllmer[plots]" in capsys.readouterr().out


# -- atomic cell files and resume -------------------------------------------------------------
def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "cells" / "a.json"
    atomic_write_json(path, {"status": "done", "x": 1})
    assert json.loads(path.read_text()) == {"status": "done", "x": 1}

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(path, {"status": "done", "x": 2, "big": list(range(10000))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "done", "x": 1}  # old content intact
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # temp file removed

    # a stray temp file from a hard kill is never read as a cell
    (path.parent / ".b.json.123.tmp").write_text('{"status": "do')
    assert [r["x"] for r in CellStore(tmp_path).read_all()] == [1]


def test_nan_is_stored_as_null(tmp_path):
    path = atomic_write_json(tmp_path / "c.json", {"v": float("nan"), "w": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"v": None, "w": [1.0, None]}


def test_resume_skips_done_cells_and_reruns_stale(tmp_path, monkeypatch):
    spec = tiny_spec(tmp_path)
    yaml_path = tmp_path / "tiny.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(spec.raw))
    results = tmp_path / "results"
    ran = []

    def fake_run(job, workdir, log_path):
        ran.append(job["cell_id"])
        record = fake_record(job["cell"]["method"], job["cell"]["seed"], 0.1, vectors=job["cell"]["vectors"])
        record["fingerprint"] = job["fingerprint"]
        CellStore(job["results_dir"]).write(job["cell_id"], record)
        return 0

    monkeypatch.setattr(command, "run_job_subprocess", fake_run)
    args = ["--config", str(yaml_path), "--results-root", str(results), "--workdir", str(tmp_path / "w"), "--no-plots"]

    # first run is "killed" after two cells
    command.main(args + ["--max-cells", "2"])
    assert len(ran) == 2
    first = list(ran)
    # resume: the two done cells are skipped, the other four run
    ran.clear()
    command.main(args)
    assert len(ran) == 4 and not set(first) & set(ran)
    # nothing left
    ran.clear()
    command.main(args)
    assert ran == []
    # a cell file from another configuration (other fingerprint) is run again
    store = CellStore(results / "tiny")
    rec = store.read(first[0])
    rec["fingerprint"] = "other"
    store.write(first[0], rec)
    command.main(args)
    assert ran == [first[0]]
    # a live claim by another worker is respected; a claim of a dead process is taken over
    assert not store.is_claimed(first[1])
    assert store.claim(first[1]) and not store.claim(first[1])
    assert store.is_claimed(first[1])
    store.release(first[1])
    (store.claims_dir / f"{first[1]}.claim").write_text("%s 999999999 %d\n" % (os.uname().nodename, 10**10))
    assert not store.is_claimed(first[1])
    assert store.claim(first[1])
    md = (results / "tiny" / "leaderboard.md").read_text()
    assert "Cells: 6 of 6 done" in md


# -- tuning: validation-only, same budget per method ------------------------------------------
TUNING = {
    "trials": 3,
    "seed": 1,
    "sampler_seed": 0,
    "space": {
        "RandInit": {"learning_rate": [0.001, 0.002, 0.004]},
        "TFLLMER": {"learning_rate": [0.001, 0.002, 0.004], "rec_pca_alpha": [0.1, 0.5], "item_norm_scale": [1, 3]},
    },
}


def tuning_spec_file(tmp_path, tuning=TUNING):
    import yaml

    raw = dict(tiny_spec(tmp_path).raw, tuning=tuning)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tuning_gives_every_method_the_same_budget_and_selects_on_validation_only(tmp_path, monkeypatch, capsys):
    """Validation score rises with the learning rate, test NDCG@10 falls with it: the winner
    must be the highest learning rate (validation), and the board must run with it."""
    from recbole_tfllmer.leaderboard import tuning

    ran = []

    def fake_run(job, workdir, log_path):
        ran.append(job["cell_id"])
        lr = job["config_dict"]["learning_rate"]
        record = fake_record(job["cell"]["method"], job["cell"]["seed"], 0.1 - lr, vectors=job["cell"]["vectors"])
        record.update(
            fingerprint=job["fingerprint"],
            best_valid_score=lr + 0.001 * job["cell"]["seed"],
            config_overrides=job["config_dict"],
        )
        CellStore(job["results_dir"]).write(job["cell_id"], record)
        return 0

    monkeypatch.setattr(command, "run_job_subprocess", fake_run)
    results = tmp_path / "results"
    args = [
        "--config",
        str(tuning_spec_file(tmp_path)),
        "--results-root",
        str(results),
        "--workdir",
        str(tmp_path / "w"),
        "--no-plots",
    ]
    # --max-cells counts trials and board cells together: a "killed" first run does 4 trials
    command.main(args + ["--max-cells", "4"])
    assert len(ran) == 4 and all("__t" in r for r in ran)
    capsys.readouterr()
    command.main(args + ["--list"])
    listed = [line for line in capsys.readouterr().out.splitlines() if " trial " in line]
    assert sorted(line.split()[0] for line in listed) == ["done"] * 4 + ["todo"] * 5
    assert {line.split()[2] for line in listed if line.startswith("done")} == set(ran)
    command.main(args)

    trials = [r for r in ran if "__t" in r]
    board = [r for r in ran if "__t" not in r]
    # 3 groups (RandInit/none, TFLLMER/st, TFLLMER/raw) x 3 trials, all with the tuning seed
    assert len(trials) == 9 and all("seed1__t" in r for r in trials)
    per_group = {}
    for r in trials:
        per_group.setdefault(r.split("__seed")[0], []).append(r)
    assert sorted(len(v) for v in per_group.values()) == [3, 3, 3]
    # the seed-1 board cells are the winning trials, copied; only seed 2 is trained again
    assert sorted(board) == sorted(c.cell_id for c in tiny_spec(tmp_path).cells() if c.seed == 2)
    store = CellStore(results / "tiny")
    spec = tiny_spec(tmp_path)
    spec.tuning = TUNING
    for method, vectors in (("RandInit", "none"), ("TFLLMER", "st"), ("TFLLMER", "raw")):
        best_lr = max(dict(options)["learning_rate"] for options in tuning.method_trials(spec, method))
        for seed in (1, 2):
            record = store.read(Cell("ml-100k", "GRU4Rec", method, vectors, seed).cell_id)
            assert record["config_overrides"]["learning_rate"] == best_lr  # best on validation, worst on test
    seed1 = store.read("ml-100k__GRU4Rec__TFLLMER__st__seed1")
    assert seed1["reused_from_trial"].startswith("ml-100k__GRU4Rec__TFLLMER__st__seed1__t")
    selected = json.loads((results / "tiny" / "tuning" / "selected.json").read_text())
    assert set(selected) == {
        "ml-100k/GRU4Rec/RandInit/none",
        "ml-100k/GRU4Rec/TFLLMER/st",
        "ml-100k/GRU4Rec/TFLLMER/raw",
    }
    report = (results / "tiny" / "tuning.md").read_text()
    assert "3 trials per method" in report and "(12 points)" in report and report.count("| **t") == 3
    assert "Cells: 6 of 6 done" in (results / "tiny" / "leaderboard.md").read_text()
    # the TFLLMER trials are a fixed sample of its 12-point grid
    assert tuning.method_trials(spec, "TFLLMER") == tuning.method_trials(spec, "TFLLMER")
    assert len(set(tuning.method_trials(spec, "TFLLMER"))) == 3

    # resume: nothing left to run
    ran.clear()
    command.main(args)
    assert ran == []


def test_tuning_section_must_give_every_method_a_grid(tmp_path):
    from recbole_tfllmer.leaderboard.spec import SpecError, load_spec

    with pytest.raises(SpecError, match=r"tuning.space has no grid for method\(s\) \['RandInit'\]"):
        load_spec(tuning_spec_file(tmp_path, dict(TUNING, space={"TFLLMER": TUNING["space"]["TFLLMER"]})))
    with pytest.raises(SpecError, match=r"tuning.trials must be an integer >= 1"):
        load_spec(tuning_spec_file(tmp_path, dict(TUNING, trials=0)))


# -- long tail --------------------------------------------------------------------------------
def test_long_tail_buckets_on_hand_made_ranks():
    # 6 test users; their targets' training popularity and the rank each target got
    popularity = np.array([50, 1, 10, 3, 100, 1])
    ranks = np.array([1, 30, 3, 11, 2, 10])
    assert popularity_buckets(popularity, 3).tolist() == [2, 0, 1, 1, 2, 0]  # sorted: 1,1 | 3,10 | 50,100
    out = bucket_metrics(ranks, popularity, n_buckets=3, k=10)
    assert [b["n"] for b in out] == [2, 2, 2]
    assert [(b["pop_min"], b["pop_max"]) for b in out] == [(1, 1), (3, 10), (50, 100)]
    # bucket 0: ranks 30 (miss), 10 (1/log2(11)); bucket 1: ranks 11 (miss), 3 (1/log2(4) = 0.5)
    assert out[0]["ndcg@10"] == pytest.approx((0 + 1 / math.log2(11)) / 2)
    assert out[1]["ndcg@10"] == pytest.approx(0.25)
    assert out[2]["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert out[0]["hit@10"] == pytest.approx(0.5)
    # the buckets' size-weighted mean is the overall NDCG@10
    overall = ndcg_at_k(ranks, 10).mean()
    assert sum(b["ndcg@10"] * b["n"] for b in out) / len(ranks) == pytest.approx(overall)
    assert hit_at_k(ranks, 10).tolist() == [1, 0, 1, 0, 1, 1]


# -- one real tiny cell -----------------------------------------------------------------------
def test_real_tiny_cell_matches_recbole_and_is_deterministic(ml_slice, tmp_path, in_tmp):
    pytest.importorskip("recbole_tfllmer.diagnostics.conditioning")
    from recbole_tfllmer.leaderboard.runner import run_cell
    from tests.conftest import slice_config

    data_path, name = ml_slice
    config = slice_config(
        data_path,
        name,
        tmp_path,
        epochs=1,
        topk=[10, 20],
        metric_decimal_place=10,
        model="TFLLMER",
        backbone="GRU4Rec",
        seed=7,
    )
    job = {
        "cell_id": "tiny",
        "cell": {"dataset": name, "backbone": "GRU4Rec", "method": "RandInit", "vectors": "none", "seed": 7},
        "config_files": [str(METHOD_DIR / "RandInit.yaml")],
        "config_dict": config,
        "conditioning": {"sample_size": 32, "seed": 0},
        "longtail": {"buckets": 3, "k": 10},
        "init_logger": False,
    }
    a = run_cell(job, workdir=tmp_path / "w1")
    b = run_cell(job, workdir=tmp_path / "w2")
    # our own full-sort pass reproduces RecBole's test metrics (NDCG/HR @10 and @20)
    assert a["longtail"]["abs_diff"] < 1e-6
    assert set(a["longtail"]["own_overall"]) == {"ndcg@10", "ndcg@20", "hit@10", "hit@20"}
    assert sum(x["n"] for x in a["longtail"]["buckets"]) == a["longtail"]["n_test_rows"] == 60
    # same seed -> same metrics, losses, validation curve and conditioning
    assert a["test"] == b["test"]
    assert a["train_loss"] == b["train_loss"]
    assert a["valid_scores"] == b["valid_scores"]
    assert a["conditioning"]["init"]["mean"] == pytest.approx(b["conditioning"]["init"]["mean"], rel=1e-9)
    assert a["epochs_run"] == 1 and len(a["epoch_train_seconds"]) == 1
    assert a["conditioning"]["init"]["mean"] >= 1.0


def test_backbone_method_overrides_reach_only_their_cells(tmp_path):
    spec = tiny_spec(tmp_path)
    spec.backbones = ["GRU4Rec", "SASRec"]
    before = {c.cell_id: spec.fingerprint(c) for c in spec.cells()}
    spec.backbone_method_overrides = {"GRU4Rec": {"TFLLMER": {"item_norm_scale": None}}}
    changed = {c.cell_id for c in spec.cells() if spec.fingerprint(c) != before[c.cell_id]}
    assert changed == {c.cell_id for c in spec.cells() if (c.backbone, c.method) == ("GRU4Rec", "TFLLMER")}
    cell = next(c for c in spec.cells() if (c.backbone, c.method) == ("GRU4Rec", "TFLLMER"))
    assert spec.cell_inputs(cell)[1]["item_norm_scale"] is None


def test_list_estimates_the_hours_left_from_the_finished_cells(tmp_path):
    from recbole_tfllmer.leaderboard.command import time_left

    store = CellStore(tmp_path / "results")
    for seed, epochs in ((1, 10), (2, 30), (3, 20)):  # median 20 epochs of 180 s (150 train + 30 valid)
        record = fake_record("RandInit", seed, 0.05, vectors=NO_VECTORS)
        record.update(epochs_run=epochs, epoch_train_seconds=[150.0] * epochs, epoch_valid_seconds=[30.0] * epochs)
        store.write(record["cell_id"], record)
    todo = Cell("ml-100k", "GRU4Rec", "TFLLMER", "st", 1)
    half = Cell("ml-100k", "GRU4Rec", "TFLLMER", "st", 2)
    nearly = Cell("ml-100k", "GRU4Rec", "TFLLMER", "st", 3)  # past the typical run, patience left
    other = Cell("ml-100k", "SASRec", "TFLLMER", "st", 1)  # no finished SASRec cell to go by
    done = Cell("ml-100k", "GRU4Rec", "RandInit", NO_VECTORS, 1)
    states = [
        (done, "done", None),
        (todo, "todo", None),
        (half, "paused", {"epochs_done": 15, "patience_left": 4}),
        (nearly, "running", {"epochs_done": 25, "patience_left": 3}),
    ]
    line, hours = time_left(store, states)
    assert hours == pytest.approx((20 + 5 + 3) * 180 / 3600)
    assert line.startswith("3 of 4 cells left: about 1.4 h of one core")
    line, hours = time_left(store, states + [(other, "todo", None)])
    assert hours is None and "1 cell(s) with no finished cell to go by, not counted" in line
    assert time_left(store, [(done, "done", None)]) == ("1 cells, all done", 0.0)
    line, hours = time_left(store, [(done, "done", None), (other, "todo", None)])
    assert hours is None and line.startswith("1 of 2 cells left: no estimate yet")


def test_list_prices_a_cell_from_its_own_method_where_one_finished(tmp_path):
    """A method whose cells cost far more than the others' (an LM scored per user, no epochs)
    is priced from its own finished cell, not from the other methods' epochs."""
    from recbole_tfllmer.leaderboard.command import time_left

    store = CellStore(tmp_path / "results")
    for seed in (1, 2):  # RandInit: 20 epochs of 100 s
        record = fake_record("RandInit", seed, 0.05, vectors=NO_VECTORS)
        record.update(epochs_run=20, epoch_train_seconds=[90.0] * 20, epoch_valid_seconds=[10.0] * 20)
        store.write(record["cell_id"], record)
    slow = fake_record("TFLLMER", 1, 0.06)  # 10 epochs of 400 s
    slow.update(epochs_run=10, epoch_train_seconds=[400.0] * 10, epoch_valid_seconds=[])
    store.write(slow["cell_id"], slow)
    lm = fake_record("ALLMRec-localLM", 1, 0.07)  # no epochs: 2 h of LM training and scoring
    lm.update(
        epochs_run=0,
        epoch_train_seconds=[],
        timings={"data_seconds": 600.0, "fit_seconds": 5400.0, "test_seconds": 1200.0},
    )
    store.write(lm["cell_id"], lm)
    states = [
        (Cell("ml-100k", "GRU4Rec", "TFLLMER", "st", 2), "todo", None),
        (Cell("ml-100k", "GRU4Rec", "ALLMRec-localLM", "st", 2), "todo", None),
        (Cell("ml-100k", "GRU4Rec", "LLMEmb", "st", 2), "todo", None),
    ]
    line, hours = time_left(store, states)
    assert hours == pytest.approx((10 * 400 + 7200 + 20 * 100) / 3600)
    assert "LLMEmb: no finished cell yet, priced like the other methods" in line
    assert "TFLLMER" not in line and "ALLMRec" not in line


def test_a_finished_cell_reruns_for_an_export_only_when_a_cell_still_to_run_needs_it(tmp_path):
    """A-LLMRec's chain: S1 starts from stage 1's exported table, stage 1 from RandInit's
    checkpoint. On a machine without the exports, a finished board reruns nothing; a missing
    S1 record brings back stage 1 and, through it, RandInit."""
    from recbole_tfllmer.leaderboard.command import still_needed_exports

    spec = _board(
        tmp_path,
        methods=["RandInit", "ALLMRec-stage1", "ALLMRec-S1"],
        seeds=[1, 2],
        vector_kinds=["st"],
        table_sources={"ALLMRec-S1": "ALLMRec-stage1"},
    )
    store = CellStore(tmp_path / "results")
    for cell in spec.cells():
        store.write(cell.cell_id, {"status": "done", "fingerprint": spec.fingerprint(cell)})
    by_id = {c.cell_id: c for c in spec.cells()}
    rand, stage1, s1 = (
        by_id[f"ml-100k__SASRec__{m}__seed1"] for m in ("RandInit__none", "ALLMRec-stage1__st", "ALLMRec-S1__st")
    )
    assert all(kinds == [] for kinds in still_needed_exports(spec, store).values())

    store.cell_path(s1.cell_id).unlink()  # S1 of seed 1 still to run: the whole chain of seed 1 comes back
    needed = still_needed_exports(spec, store)
    assert needed[stage1] == ["item_table"] and needed[rand] == ["checkpoint"]
    assert sum(map(bool, needed.values())) == 2  # seed 2 stays done
    spec.artifact_path(stage1, store.root, "item_table").parent.mkdir(parents=True)
    spec.artifact_path(stage1, store.root, "item_table").touch()  # stage 1's table is there: RandInit rests
    needed = still_needed_exports(spec, store)
    assert needed[stage1] == ["item_table"] and needed[rand] == []


def test_collab_backbone_same_gives_each_backbone_its_own_collaborative_chain(tmp_path):
    """`collab_backbone: same`: GRU4Rec's LLMEmb aligns with GRU4Rec's RandInit table, A-LLMRec's stage 1
    runs on both backbones and each ALLMRec-S1 starts from its own backbone's stage 1; the default
    (SASRec, as in their code) keeps one SASRec source for every backbone."""
    methods = ["RandInit", "LLMEmb", "ALLMRec-stage1", "ALLMRec-S1"]
    extra = {"backbones": ["SASRec", "GRU4Rec"], "methods": methods, "vector_kinds": ["st"]}
    extra["table_sources"] = {"ALLMRec-S1": "ALLMRec-stage1"}
    same, default = _board(tmp_path, collab_backbone="same", **extra), _board(tmp_path, **extra)

    def source(spec, backbone, method):
        vectors = "none" if method == "RandInit" else "st"
        return spec.collab_source(Cell("ml-100k", backbone, method, vectors, 1))

    assert source(same, "GRU4Rec", "LLMEmb") == Cell("ml-100k", "GRU4Rec", "RandInit", "none", 1)
    assert source(same, "GRU4Rec", "ALLMRec-stage1") == Cell("ml-100k", "GRU4Rec", "RandInit", "none", 1)
    assert source(same, "GRU4Rec", "ALLMRec-S1") == Cell("ml-100k", "GRU4Rec", "ALLMRec-stage1", "st", 1)
    assert source(default, "GRU4Rec", "LLMEmb") == Cell("ml-100k", "SASRec", "RandInit", "none", 1)
    assert source(default, "GRU4Rec", "ALLMRec-S1") == Cell("ml-100k", "SASRec", "ALLMRec-stage1", "st", 1)
    stage1_backbones = {c.backbone for c in same.cells() if c.method == "ALLMRec-stage1"}
    assert stage1_backbones == {"SASRec", "GRU4Rec"}
    assert {c.backbone for c in default.cells() if c.method == "ALLMRec-stage1"} == {"SASRec"}
    gru_rand = Cell("ml-100k", "GRU4Rec", "RandInit", "none", 1)
    assert same.exports(gru_rand) == ["checkpoint", "item_table"] and default.exports(gru_rand) == []
    sas = Cell("ml-100k", "SASRec", "LLMEmb", "st", 1)
    assert same.fingerprint(sas) == default.fingerprint(sas)  # SASRec's cells do not go stale
    assert same.fingerprint(Cell("ml-100k", "GRU4Rec", "LLMEmb", "st", 1)) != default.fingerprint(
        Cell("ml-100k", "GRU4Rec", "LLMEmb", "st", 1)
    )
