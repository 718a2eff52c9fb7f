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

    def clear(self):
        self.path.unlink(missing_ok=True)
