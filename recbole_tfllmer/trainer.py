"""RecBole's trainers with weights-only checkpoints (see checkpoint.py for why).

Only checkpoint I/O changes; training and evaluation are RecBole's own code.
"""

import os

from recbole.utils import set_color

from recbole_tfllmer.checkpoint import FORMAT, atomic_torch_save, config_to_json, load_checkpoint


class WeightsOnlyCheckpointMixin:
    """Overrides the three places RecBole's Trainer reads or writes a checkpoint."""

    def __init__(self, config, model):
        super().__init__(config, model)
        backbone = config["backbone"] if "backbone" in config else None
        if backbone:
            # "TFLLMER-GRU4Rec-Nov-22-2026_19-01-02.pth": the file says what was wrapped.
            directory, name = os.path.split(self.saved_model_file)
            self.saved_model_file = os.path.join(
                directory, name.replace(config["model"], f"{config['model']}-{backbone}", 1)
            )

    def _checkpoint_state(self, epoch):
        return {
            "format": FORMAT,
            "config": config_to_json(self.config),
            "model": self.config["model"],
            "backbone": self.config["backbone"] if "backbone" in self.config else None,
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint {resume_file} was written by model {checkpoint['model']}, "
                f"not {self.config['model']}; loading its state_dict may fail"
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def load_best_model(self, model_file=None):
        checkpoint_file = model_file or self.saved_model_file
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            self.load_best_model(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


_TRAINER_CACHE = {}


def weights_only_trainer(base):
    """`base` (a RecBole trainer class) with weights-only checkpoints, e.g. SafeTrainer."""
    if base not in _TRAINER_CACHE:
        _TRAINER_CACHE[base] = type(f"WeightsOnly{base.__name__}", (WeightsOnlyCheckpointMixin, base), {})
    return _TRAINER_CACHE[base]
