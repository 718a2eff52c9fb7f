"""The command line as a process: Ctrl-C is one line and exit status 130 (also in the log), an
interrupted run resumes from its checkpoint, and two runs started together from one directory
keep their own checkpoint and log."""

import signal
import subprocess
import time

from tests.conftest import cli_command


def test_ctrl_c_is_one_line_and_exit_status_130(tmp_path):
    argv, env = cli_command(tmp_path, n_users=150, epochs=500, item_init="random", item_norm="none")
    # A background job of a non-interactive shell (`make test &`) inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give the child the default disposition, as a terminal does.
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300  # generous: the first epoch is slow on a loaded 2-core machine
    while time.monotonic() < deadline and not list((tmp_path / "saved").glob("*.pth")):
        time.sleep(0.2)  # training has started once the first best epoch is saved
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "train loss" in err and "mean per batch" in err  # RecBole's summed loss, explained
    lines = [ln for ln in err.splitlines() if ln.startswith("recbole-tfllmer:")]
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0]
    logs = list((tmp_path / "log").rglob("*.log"))
    assert logs and any("interrupted (Ctrl-C)" in p.read_text(encoding="utf-8") for p in logs)


def test_an_interrupted_run_resumes_from_its_checkpoint_on_the_command_line(tmp_path):
    """`--resume_from=<checkpoint>` continues training after the checkpoint's epoch."""
    argv, env = cli_command(tmp_path, epochs=2, item_init="random", item_norm="none")

    def run(*extra):
        return subprocess.run([*argv, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0, first.stderr[-1500:]
    (checkpoint,) = (tmp_path / "saved").glob("*.pth")
    again = run("--epochs=4", f"--resume_from={checkpoint}")
    assert again.returncode == 0, again.stderr[-1500:]
    assert "Resume training from epoch" in again.stderr and "epoch 0 training" not in again.stderr
    assert "test result" in again.stderr
    missing = run("--resume_from=/nonexistent.pth")
    assert missing.returncode == 2
    assert "option `resume_from`: checkpoint '/nonexistent.pth' does not exist" in missing.stderr


def test_two_runs_started_together_from_one_directory_keep_two_checkpoints_and_two_logs(tmp_path):
    """RecBole names both by the time to the second; the plugin's run id keeps them apart."""
    argv, env = cli_command(tmp_path, epochs=1, item_init="random", item_norm="none")
    procs = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-1500:] for err in errs]
    checkpoints = sorted((tmp_path / "saved").glob("*.pth"))
    logs = sorted((tmp_path / "log").rglob("*.log"))
    assert len(checkpoints) == 2 and len(logs) == 2, (checkpoints, logs)
    # each run evaluated its own checkpoint and logged only itself
    for err in errs:
        assert len([p for p in checkpoints if p.name in err]) == 1 and "test result" in err
    assert all(log.read_text(encoding="utf-8").count("test result") == 1 for log in logs)
