"""The package works installed like any other: built and installed (not editable) into a
temporary folder, then used from a directory outside the checkout, so nothing may lean on
the repository (method presets, defaults, results folder, PYTHONPATH of the cell processes)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import slice_config

REPO = Path(__file__).resolve().parents[1]
# What a source distribution holds: the package and what setup.cfg reads.
SOURCES = ("recbole_tfllmer", "setup.cfg", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(outside directory, environment) with the package installed under TMP/site only."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        cwd=root,
        timeout=300,
        capture_output=True,
    )
    outside = root / "outside"
    outside.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        XDG_CACHE_HOME=str(root / "cache"),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import recbole_tfllmer; print(recbole_tfllmer.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    imported = Path(proc.stdout.strip()).resolve()
    assert imported.is_relative_to(site.resolve()), f"imported {imported}, not the installed copy"
    assert (imported.parent / "properties" / "method" / "TFLLMER.yaml").is_file()  # package data
    return outside, env


def _run(command, cwd, env, timeout=240):
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def test_installed_cli_trains_tfllmer(installed, ml_slice, tmp_path):
    outside, env = installed
    data_path, name = ml_slice
    config = slice_config(data_path, name, tmp_path)
    (outside / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    output = _run(
        [
            sys.executable,
            "-m",
            "recbole_tfllmer.cli",
            "-m",
            "TFLLMER",
            "--backbone=GRU4Rec",
            "-d",
            name,
            "--config_files=run.yaml",
        ],
        outside,
        env,
    )
    assert "test result" in output and "ndcg@10" in output


def test_installed_leaderboard_finds_presets_and_writes_under_the_cwd(installed, ml_slice, tmp_path):
    outside, env = installed
    data_path, name = ml_slice
    properties = slice_config(data_path, name, tmp_path)
    properties.pop("checkpoint_dir")  # the runner puts checkpoints in the board's scratch folder
    (outside / "slice.yaml").write_text(yaml.safe_dump(properties), encoding="utf-8")
    board = {
        "name": "tiny",
        "datasets": {name: {"properties": "slice.yaml"}},  # beside the board yaml
        "backbones": ["GRU4Rec"],
        "methods": ["RandInit", "TFLLMER"],  # presets by name only: they ship with the package
        "seeds": [1],
        "vector_kinds": ["st"],
        "overrides": {"epochs": 1, "save_dataset": False, "save_dataloaders": False},
        "conditioning": {"sample_size": 16, "seed": 0},
        "longtail": {"buckets": 2, "k": 10},
    }
    (outside / "tiny.yaml").write_text(yaml.safe_dump(board), encoding="utf-8")
    output = _run(
        [sys.executable, "-m", "recbole_tfllmer.leaderboard", "--config", "tiny.yaml", "--threads", "1"], outside, env
    )
    cells = sorted((outside / "results" / "tiny" / "cells").glob("*.json"))
    assert [c.name for c in cells] == [
        f"{name}__GRU4Rec__RandInit__none__seed1.json",
        f"{name}__GRU4Rec__TFLLMER__st__seed1.json",
    ], output[-3000:]
    assert all(json.loads(c.read_text())["status"] == "done" for c in cells)
    assert "Cells: 2 of 2 done" in (outside / "results" / "tiny" / "leaderboard.md").read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # without the `plots` extra: md/csv only, and a line that says so
        assert "pip install recbole-tfllmer[plots]" in output
    else:
        assert (outside / "results" / "tiny" / "loss_curves.png").is_file()
    # scratch went to the documented default, $XDG_CACHE_HOME/recbole_tfllmer/leaderboard/<name>
    assert (Path(env["XDG_CACHE_HOME"]) / "recbole_tfllmer" / "leaderboard" / "tiny" / "logs").is_dir()
