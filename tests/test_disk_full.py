"""A full disk while the cache or a checkpoint is written: one line, exit status 2, the path
named, nothing half-written, and the next run with room succeeds without manual clean-up.

"Full" is a file-size limit (RLIMIT_FSIZE) on the run's process: every write beyond it fails
with EFBIG, as writes on a full disk fail with ENOSPC, and the test needs no mount."""

import resource
import signal
import subprocess
from pathlib import Path

from tests.conftest import cli_command

REPO = Path(__file__).resolve().parents[1]


def limited(max_bytes):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return preexec


def run(tmp_path, command, preexec=None):
    argv, env = command
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=preexec)


def error_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("recbole-tfllmer: error:")]


def leftovers(root):
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".emb.partial")]


def setup(tmp_path):
    return cli_command(tmp_path, epochs=1, embedding_cache_dir=str(tmp_path / "cache"))


def test_full_disk_while_writing_the_embedding_cache(tmp_path):
    command = setup(tmp_path)
    proc = run(tmp_path, command, limited(64 * 1024))  # the slice's cache is ~0.9 MiB
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = error_lines(proc)
    assert "could not write" in line and str(tmp_path / "cache") in line and "embedding_cache_dir" in line
    assert "Traceback" not in proc.stderr
    assert not leftovers(tmp_path / "cache")
    assert run(tmp_path, command).returncode == 0  # room again: no clean-up needed


def test_full_disk_while_writing_a_checkpoint_keeps_nothing_half_written(tmp_path):
    command = setup(tmp_path)
    assert run(tmp_path, command).returncode == 0  # the cache exists: only the checkpoint is big
    for old in (tmp_path / "saved").glob("*.pth"):
        old.unlink()
    proc = run(tmp_path, command, limited(48 * 1024))
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = error_lines(proc)
    assert "could not write" in line and ".pth" in line and "checkpoint_dir" in line
    assert "Traceback" not in proc.stderr
    assert not leftovers(tmp_path / "saved") and not list((tmp_path / "saved").glob("*.pth"))
    assert run(tmp_path, command).returncode == 0
