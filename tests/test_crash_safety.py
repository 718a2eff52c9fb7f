"""Crash safety: SIGKILL a real run during encoding, then during Rec-PCA.

One story on a 300-item slice, every run a real process (`run_recbole_tfllmer.py`, or this
module's driver, which is the same CLI plus two spies):

1. the CLI encodes in chunks of 16 items (`embedding_chunk_size: 16`) and is killed once
   three chunks are committed: no cache file may look complete;
2. the next run must say it resumed exactly those chunks (a torn chunk and a stray temp
   file planted after the kill must be ignored), commit the cache, and is then killed
   inside Rec-PCA (the driver pauses in the eigensolver and writes a marker): nothing
   new may be left behind, no checkpoint written;
3. a third run must hit the cache, recompute Rec-PCA, and finish.

An uninterrupted run on a copy of the slice is the reference: the cache (embeddings) and
the Rec-PCA output of the story must be identical to it, bit for bit. All processes use
one intra-op thread, so the floating-point reductions are the same in every run.

    python -m tests.test_crash_safety [--pause-in-rec-pca MARKER] [--dump-init OUT.npz] -- <CLI args>
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.test_bad_inputs import Workdir, assert_nothing_half_written, tiny_config, write_tiny_slice

CHUNK = 16
N_USERS, N_ITEMS = 100, 300
KILL_AFTER_CHUNKS = 3


def workdir(root):
    work = Workdir(Path(root))
    write_tiny_slice(work.data_path, work.name, n_users=N_USERS, n_items=N_ITEMS)
    work.config = tiny_config(work, epochs=0, embedding_chunk_size=CHUNK)
    (work.root / "run.yaml").write_text(yaml.safe_dump(work.config), encoding="utf-8")
    return work


def cli_args(work):
    return ["-m", "TFLLMER", "-d", work.name, f"--config_files={work.root / 'run.yaml'}"]


def start(work, log_name, driver_args=None):
    """Popen of the CLI (driver_args None) or of this module's driver."""
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    if driver_args is None:
        command = [sys.executable, str(REPO_ROOT / "run_recbole_tfllmer.py"), *cli_args(work)]
    else:
        command = [sys.executable, "-m", "tests.test_crash_safety", *driver_args, "--", *cli_args(work)]
    log = open(work.root / log_name, "w")
    return subprocess.Popen(command, cwd=work.root, env=env, stdout=log, stderr=subprocess.STDOUT), log


def finish(proc, log, timeout=300):
    proc.wait(timeout=timeout)
    log.close()
    return Path(log.name).read_text()


def kill_when(proc, log, condition, what, timeout=300):
    """SIGKILL `proc` as soon as `condition()` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            output = finish(proc, log)
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    log.close()
    assert proc.returncode == -signal.SIGKILL
    return Path(log.name).read_text()


def cache_files(work):
    return sorted(work.cache_dir.glob("*.emb.npy")), sorted(work.cache_dir.glob("*.emb.partial"))


def committed_chunks(partial_dir):
    return sorted(p for p in partial_dir.glob("chunk-*.json"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("uninterrupted"))
    proc, log = start(work, "run.log", ["--dump-init", str(work.root / "init.npz")])
    output = finish(proc, log)
    assert proc.returncode == 0, output[-3000:]
    (npy,), _ = cache_files(work)
    return {"embeddings": npy.read_bytes(), "init": dict(np.load(work.root / "init.npz")), "output": output}


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("killed"))
    facts = {"work": work}

    # 1. the CLI, killed during encoding
    proc, log = start(work, "1-encoding.log")

    def chunks_committed():
        partial = cache_files(work)[1]
        return bool(partial) and len(committed_chunks(partial[0])) >= KILL_AFTER_CHUNKS

    facts["1"] = kill_when(proc, log, chunks_committed, f"{KILL_AFTER_CHUNKS} chunks were committed")
    npys, (partial,) = cache_files(work)
    from recbole_tfllmer.text.store import file_sha256

    chunks = committed_chunks(partial)
    facts["after_1"] = {
        "npys": npys,
        "partial": partial,
        "chunks": chunks,
        "metas": [json.loads(c.read_text()) for c in chunks],
        "sha256": [file_sha256(c.with_suffix(".npy")) for c in chunks],
    }
    facts["after_1_clean"] = _half_written_problems(work, partial_allowed=True)
    # A torn chunk (.npy, no .json: killed between the two) and a stray temp file.
    next_index = len(facts["after_1"]["chunks"])
    (partial / f"chunk-{next_index:06d}.npy").write_bytes(b"\x93NUMPY torn write")
    (partial / f".chunk-{next_index:06d}.json.abc123.tmp").write_text("{")

    # 2. resumes the encoding, then killed inside Rec-PCA
    marker = work.root / "in-rec-pca"
    proc, log = start(work, "2-rec-pca.log", ["--pause-in-rec-pca", str(marker)])
    facts["2"] = kill_when(proc, log, marker.exists, "Rec-PCA started")
    facts["after_2_cache"] = cache_files(work)
    facts["after_2_checkpoints"] = sorted(work.checkpoint_dir.glob("*.pth")) if work.checkpoint_dir.exists() else []

    # 3. runs to the end
    proc, log = start(work, "3-final.log", ["--dump-init", str(work.root / "init.npz")])
    facts["3"] = finish(proc, log)
    facts["3_status"] = proc.returncode
    return facts


def _half_written_problems(work, partial_allowed):
    try:
        if partial_allowed:
            npys, _ = cache_files(work)
            assert not npys, f"a cache file exists after a kill during encoding: {npys}"
        else:
            assert_nothing_half_written(work.root, checkpoints_allowed=True)
    except AssertionError as err:
        return str(err)
    return None


def test_kill_during_encoding_leaves_no_complete_looking_cache(story):
    after = story["after_1"]
    assert story["after_1_clean"] is None, story["after_1_clean"]
    assert not after["npys"]  # no .emb.npy (and so no .emb.json) for a killed encoding
    assert len(after["chunks"]) >= KILL_AFTER_CHUNKS
    for meta, sha in zip(after["metas"], after["sha256"]):  # every committed chunk is whole
        assert meta["stop"] - meta["start"] == CHUNK
        assert sha == meta["npy_sha256"]


def test_next_run_resumes_the_committed_chunks_only(story, reference):
    n_chunks = len(story["after_1"]["chunks"])
    log = story["2"]
    assert f"{n_chunks} chunk(s) resumed from {story['after_1']['partial']}" in log
    assert f"encoded {N_ITEMS - n_chunks * CHUNK} items" in log
    (npy,), partial = story["after_2_cache"]
    assert not partial  # committed, chunks cleaned up
    assert npy.read_bytes() == reference["embeddings"]  # bit for bit, header included


def test_kill_during_rec_pca_leaves_nothing_and_the_rerun_matches(story, reference):
    work = story["work"]
    assert not story["after_2_checkpoints"]  # Rec-PCA runs before training: no checkpoint yet
    assert story["3_status"] == 0, story["3"][-3000:]
    assert "embedding cache hit" in story["3"]  # encoding is not redone ...
    rerun = dict(np.load(work.root / "init.npz"))  # ... Rec-PCA is
    assert rerun.keys() == reference["init"].keys()
    for name, value in reference["init"].items():
        assert rerun[name].tobytes() == value.tobytes(), name
    assert_nothing_half_written(work.root, checkpoints_allowed=True)


# ----------------------------------------------------------------------------- driver
def _driver(argv):
    """The CLI, with a pause inside Rec-PCA's eigensolver and/or a dump of its result."""
    split = argv.index("--")
    options, cli = argv[:split], argv[split + 1 :]
    pause = options[options.index("--pause-in-rec-pca") + 1] if "--pause-in-rec-pca" in options else None
    dump = options[options.index("--dump-init") + 1] if "--dump-init" in options else None

    import recbole_tfllmer.tfllmer.rec_pca as rec_pca
    import recbole_tfllmer.tfllmer.tfllmer as wrapper
    from recbole_tfllmer.cli import main

    if pause:
        # Inside the projection, after its Gram matrices (or, should the private eigensolver
        # be renamed, at the projection's entry).
        module, name = (
            (rec_pca, "_top_eigenvectors") if hasattr(rec_pca, "_top_eigenvectors") else (wrapper, "rec_pca_projection")
        )
        real_step = getattr(module, name)

        def paused(*args, **kwargs):
            Path(pause).write_text(str(os.getpid()))
            time.sleep(600)  # killed here
            return real_step(*args, **kwargs)

        setattr(module, name, paused)
    if dump:
        real_projection = wrapper.rec_pca_projection

        def dumped(*args, **kwargs):
            result = real_projection(*args, **kwargs)
            arrays = {"embeddings": result.embeddings, "mean": result.mean, "eigenvalues": result.eigenvalues}
            if result.components is not None:  # item_space vectors are free: no projection matrix
                arrays["components"] = result.components
            np.savez(dump, **arrays)
            return result

        wrapper.rec_pca_projection = dumped
    return main(cli)


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
