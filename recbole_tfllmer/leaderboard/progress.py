"""Mid-cell resume: a cell's whole training state, written after every evaluation.

A converged Amazon cell trains for hours and the process running it can be stopped at any
moment. After each evaluation the runner saves one file, `<workdir>/progress/<cell_id>.pth`:
the trainer's exact-resume state (weights, optimizer, epoch and early-stopping counters, RNG
states of python / numpy / torch and of the training DataLoader's generator, see
trainer.py) plus what the runner has recorded so far (validation curve, losses, epoch times,
the best model's weights, the conditioning at initialisation). A restarted board rebuilds
the cell from the same config and seed, loads that file and continues with the next epoch:
same shuffles, same dropout masks, so the same result as a run that was never stopped.

The file is written atomically (a kill never leaves half of it), loads with
weights_only=True like every checkpoint of this plugin, and is tied to the cell's
fingerprint: a changed board configuration starts the cell afresh.
"""

import json
import time
from logging import getLogger
from pathlib import Path

from recbole_tfllmer.checkpoint import atomic_torch_save, load_checkpoint
from recbole_tfllmer.errors import CheckpointError

PROGRESS_FORMAT = "recbole_tfllmer.cell_progress/1"


class CellProgress:
    """The resume file of one cell (see the module docstring)."""

    def __init__(self, workdir, cell_id, fingerprint):
        self.path = Path(workdir) / "progress" / f"{cell_id}.pth"
        self.fingerprint = fingerprint

    def load(self):
        """The saved state, or None when there is none or it belongs to another configuration
        (a board whose options changed) or cannot be read (then the cell starts afresh)."""
        if not self.path.is_file():
            return None
        logger = getLogger()
        try:
            state = load_checkpoint(self.path, map_location="cpu", required=("progress_format", "runner"))
        except CheckpointError as err:
            logger.warning(f"[leaderboard] ignoring unreadable progress file ({err}); the cell starts afresh")
            return None
        if state.get("fingerprint") != self.fingerprint:
            logger.warning(
                f"[leaderboard] {self.path} was written for another configuration of this cell "
                f"(fingerprint {state.get('fingerprint')} != {self.fingerprint}); the cell starts afresh"
            )
            return None
        return state

    def save(self, trainer, epoch, runner_state):
        state = trainer.training_state(epoch)
        state.update({"progress_format": PROGRESS_FORMAT, "fingerprint": self.fingerprint, "runner": runner_state})
        atomic_torch_save(state, self.path)

    def describe(self):
        """One line on where a half-finished cell stands (``--list``), or None without a usable
        file: epochs done of the cap, the best validation score so far and at which epoch, how
        many evaluations of the patience are used up, the recent seconds per epoch and the age of
        the file (a file untouched for longer than an epoch means no worker is on the cell)."""
        return self.standing()[0]

    def standing(self):
        """(describe()'s line, {"epochs_done", "patience_left"}) or (None, None) without a usable file."""
        state = self.load()
        if state is None:
            return None, None
        runner = state["runner"]
        final = json.loads(state["config"]).get("final", {})
        epochs_done = int(state["epoch"]) + 1
        stopping_step = final.get("stopping_step")
        patience_left = max(0, int(stopping_step) - int(state["cur_step"])) if stopping_step is not None else None
        seconds = [t + v for t, v in zip(runner.get("epoch_train_seconds", []), runner.get("epoch_valid_seconds", []))][
            -5:
        ]
        parts = [f"epoch {epochs_done} of at most {final.get('epochs', '?')} done"]
        if runner.get("best_epoch") is not None:
            parts.append(
                f"best valid {final.get('valid_metric', 'score')} {float(state['best_valid_score']):.4f} at epoch "
                f"{runner['best_epoch']}, {int(state['cur_step'])}/{final.get('stopping_step', '?')} evaluations since"
            )
        if seconds:
            parts.append(f"{sum(seconds) / len(seconds):.0f} s per epoch lately")
        if runner.get("resumes"):
            parts.append(f"resumed {len(runner['resumes'])}x")
        age = max(0.0, time.time() - self.path.stat().st_mtime)
        parts.append(f"saved {age / 60:.0f} min ago" if age < 5400 else f"saved {age / 3600:.1f} h ago")
        return "; ".join(parts), {"epochs_done": epochs_done, "patience_left": patience_left}

    def clear(self):
        self.path.unlink(missing_ok=True)
