"""RecBole's trainers with weights-only checkpoints (see checkpoint.py for why), epoch
timings, and RecBole's stray autograd anomaly mode switched off.

Only checkpoint I/O changes; training and evaluation are RecBole's own code. Checkpoints
also carry the random number generator states (global ones and the training DataLoader's
own generator) and the best validation result, so that `resume_checkpoint` continues
exactly where the run that wrote the checkpoint was: same dropout masks, same shuffles,
same returned `best_valid_result`.
"""

import hashlib
import os
import time

import numpy as np
import torch
from recbole.utils import set_color

from recbole_tfllmer.checkpoint import (
    FORMAT,
    atomic_torch_save,
    config_to_json,
    load_checkpoint,
    load_model_state,
    plain_value,
    rng_state,
    set_rng_state,
)

REQUIRED_KEYS = ("state_dict",)
RESUME_KEYS = ("state_dict", "optimizer", "epoch", "cur_step", "best_valid_score", "model")


def switch_off_anomaly_detection(logger):
    """RecBole 1.2.1's sine.py calls torch.autograd.set_detect_anomaly(True) when it is
    imported, and importing any sequential model imports it: every backward pass of every
    model then records stack traces (3x slower on one CPU thread, far worse with several).
    It is a debugging aid that changes no result: switch it off before training."""
    if torch.is_anomaly_enabled():
        torch.autograd.set_detect_anomaly(False)
        logger.debug("torch.autograd anomaly detection (switched on by RecBole's sine.py) switched off")


class EpochTimingMixin:
    """Wall seconds of each training / validation epoch of the last fit() (the leaderboard
    records them; RecBole only logs them)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_train_seconds, self.epoch_valid_seconds = [], []

    def fit(self, *args, **kwargs):
        self.epoch_train_seconds, self.epoch_valid_seconds = [], []
        return super().fit(*args, **kwargs)

    def _train_epoch(self, *args, **kwargs):
        started = time.perf_counter()
        out = super()._train_epoch(*args, **kwargs)
        self.epoch_train_seconds.append(time.perf_counter() - started)
        return out

    def _valid_epoch(self, *args, **kwargs):
        started = time.perf_counter()
        out = super()._valid_epoch(*args, **kwargs)
        self.epoch_valid_seconds.append(time.perf_counter() - started)
        return out


class LossMeaningMixin:
    """RecBole logs the *sum* of the batch losses as "train loss" (e.g. 1257.6); boards report
    the mean per batch (8.92). Say both, so the number on the console reads as the boards'."""

    _batches_this_epoch = None

    def _train_epoch(self, train_data, *args, **kwargs):
        self._batches_this_epoch = len(train_data)
        return super()._train_epoch(train_data, *args, **kwargs)

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        line = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        if self._batches_this_epoch and not isinstance(losses, tuple):
            line += f" (sum over {self._batches_this_epoch} batches; mean per batch {losses / self._batches_this_epoch:.4f})"
        return line


class WeightsOnlyCheckpointMixin:
    """Overrides the places RecBole's Trainer reads or writes a checkpoint, and tracks what
    an exact resume needs (RNG states, this epoch's validation result)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        backbone = config["backbone"] if "backbone" in config else None
        directory, name = os.path.split(self.saved_model_file)
        if backbone:  # "TFLLMER-GRU4Rec-Nov-22-2026_19-01-02-<run id>.pth": says what was wrapped
            name = name.replace(config["model"], f"{config['model']}-{backbone}", 1)
        if "run_id" in config and torch.distributed.is_initialized():
            # distributed workers share the file rank 0 writes: a name without each worker's clock
            name = (
                f"{config['model']}-{backbone}-{config['run_id']}.pth"
                if backbone
                else f"{config['model']}-{config['run_id']}.pth"
            )
        elif "run_id" in config:  # unique for runs started in the same second (quick_start.build_config)
            name = name.replace(".pth", f"-{config['run_id']}.pth")
        self.saved_model_file = os.path.join(directory, name)

    # The training DataLoader (RecBole gives each one its own seeded torch.Generator, which
    # drives the shuffle): remembered by fit() so checkpoints can save its state, and given
    # the state restored by resume_checkpoint() before the first resumed epoch.
    _train_loader = None
    _resumed_loader_state = None

    def fit(self, train_data, *args, **kwargs):  # RecBole's trainers differ in fit's later parameters
        switch_off_anomaly_detection(self.logger)
        self._train_loader = train_data
        generator = getattr(train_data, "generator", None)
        if self._resumed_loader_state is not None and generator is not None:
            generator.set_state(self._resumed_loader_state)
            self._resumed_loader_state = None
        return super().fit(train_data, *args, **kwargs)

    # RecBole saves the checkpoint of a new best epoch *before* it updates
    # best_valid_result, so the result of this epoch's validation is tracked here.
    _epoch_valid_result = None

    def _train_epoch(self, *args, **kwargs):
        self._epoch_valid_result = None
        return super()._train_epoch(*args, **kwargs)

    def _valid_epoch(self, *args, **kwargs):
        valid_score, valid_result = super()._valid_epoch(*args, **kwargs)
        self._epoch_valid_result = valid_result
        return valid_score, valid_result

    def training_state(self, epoch):
        """Everything an exact resume after `epoch` needs (weights, optimizer, counters, the
        best validation result so far, RNG states), as tensors and plain values."""
        return self._checkpoint_state(epoch, best_valid_result=getattr(self, "best_valid_result", None))

    def _checkpoint_state(self, epoch, best_valid_result=None):
        if best_valid_result is None:  # at a new best, before RecBole updates best_valid_result
            best_valid_result = self._epoch_valid_result or getattr(self, "best_valid_result", None)
        return {
            "rng_state": rng_state(getattr(self._train_loader, "generator", None)),
            "best_valid_result": plain_value(dict(best_valid_result)) if best_valid_result else None,
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

    def _load_weights(self, checkpoint, path):
        load_model_state(self.model, checkpoint, path)

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device, required=RESUME_KEYS)
        self.restore_training_state(checkpoint, resume_file)
        self.saved_model_file = resume_file
        return checkpoint

    def restore_training_state(self, checkpoint, source):
        """Continue from `checkpoint` (a dict from `_checkpoint_state`): weights, optimizer,
        epoch counters, early-stopping state and RNG states. `source` names it in messages."""
        if checkpoint["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint '{source}' was written by model {checkpoint['model']}, "
                f"not {self.config['model']}; loading its state_dict may fail"
            )
        self._load_weights(checkpoint, source)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint.get("best_valid_result") is not None:
            self.best_valid_result = dict(checkpoint["best_valid_result"])
        state = checkpoint.get("rng_state")
        if state is not None:
            set_rng_state(state)
            self._resumed_loader_state = state.get("generator")
        else:
            self.logger.warning(
                f"checkpoint '{source}' stores no random number generator states (written by an older "
                "version): training resumes, but not with the shuffles and dropout of an uninterrupted run"
            )
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def load_best_model(self, model_file=None):
        if not self.config["single_spec"]:
            torch.distributed.barrier()  # rank 0 has written the best model before any worker reads it
        checkpoint_file = str(model_file or self.saved_model_file)
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device, required=REQUIRED_KEYS)
        self._load_weights(checkpoint, checkpoint_file)
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            self.load_best_model(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class CPUDistributedMixin:
    """RecBole wraps the model in a GPU DistributedDataParallel (device_ids = [local_rank]); a
    CPU worker of a gloo group (config.py) gets a CPU one. RecBole's own gradient-sync trick
    (set_reduce_hook, sync_grad_loss) then works unchanged."""

    def __init__(self, config, model):
        cpu_ddp = not config["single_spec"] and torch.device(config["device"]).type == "cpu"
        if cpu_ddp:
            config["single_spec"] = True  # keep AbstractTrainer from building the GPU wrapper
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.distributed_model = DistributedDataParallel(self.model)


class CandidateProtocolMixin:
    """Candidate evaluation (`eval_args.mode: uniN`, e.g. uni19: the target + 19 sampled items)
    on the same candidates for every method and every evaluation.

    RecBole draws the negatives from numpy's global RNG while the evaluation batches are
    collated, so they depend on everything trained before. Each evaluation here seeds numpy
    with `candidate_seed` (+ 1 for test, so valid and test differ), and restores the previous
    state afterwards, so training randomness is untouched. A sha256 of every (user, candidate)
    row scored is kept per phase in `candidate_hashes`, and each user's 1-based rank of the
    target among its candidates (RecBole's topk order) in `candidate_ranks`, for the cell
    records and the paired intervals."""

    candidate_hashes = None
    candidate_ranks = None

    def evaluate(self, eval_data, *args, **kwargs):
        phase = _candidate_phase(eval_data)
        if phase is None:
            return super().evaluate(eval_data, *args, **kwargs)
        seed = int(self.config["candidate_seed"] if "candidate_seed" in self.config else 0)
        state = np.random.get_state()
        np.random.seed(seed + (1 if phase == "test" else 0))
        self._candidate_digest, self._ranks = hashlib.sha256(), []
        try:
            return super().evaluate(eval_data, *args, **kwargs)
        finally:
            np.random.set_state(state)
            self.candidate_hashes = {**(self.candidate_hashes or {}), phase: self._candidate_digest.hexdigest()[:16]}
            if self._ranks:
                users, targets, ranks = (np.concatenate(x) for x in zip(*self._ranks))
                self.candidate_ranks = {**(self.candidate_ranks or {}), phase: (users, targets, ranks)}
            self._candidate_digest = self._ranks = None

    _candidate_digest = None
    _ranks = None

    def _neg_sample_batch_eval(self, batched_data):
        out = super()._neg_sample_batch_eval(batched_data)
        if self._candidate_digest is not None:
            interaction = batched_data[0]
            user_field, item_field = self.config["USER_ID_FIELD"], self.config["ITEM_ID_FIELD"]
            for field in (user_field, item_field):
                self._candidate_digest.update(interaction[field].cpu().numpy().astype(np.int64).tobytes())
            if out[1].dim() == 2:  # ranking evaluation: (users, items) scores, -inf off the candidates
                self._ranks.append(_target_ranks(out[1], out[2], out[3], interaction, batched_data[1], user_field))
        return out


def _target_ranks(scores, positive_u, positive_i, interaction, row_idx, user_field):
    """(users, targets, 1-based ranks) of the batch's targets among their candidates, in the
    order of torch.topk, as RecBole's Collector ranks them."""
    n_candidates = int(torch.isfinite(scores[0]).sum())
    _, top = torch.topk(scores, n_candidates, dim=-1)
    ranks = (top[positive_u] == positive_i.to(top.device).unsqueeze(1)).float().argmax(dim=1) + 1
    user_of_row = torch.zeros(scores.shape[0], dtype=torch.long)
    user_of_row[row_idx.cpu()] = interaction[user_field].cpu()  # every row of a batch user holds its id
    return user_of_row[positive_u.cpu()].numpy(), positive_i.cpu().numpy(), ranks.cpu().numpy()


def _candidate_phase(eval_data):
    """'valid' / 'test' for a candidate (negative-sampling) evaluation loader, else None."""
    args = getattr(eval_data, "neg_sample_args", None) or {}
    if args.get("distribution", "none") == "none" or args.get("sample_num", "none") == "none":
        return None
    sampler = getattr(eval_data, "_sampler", None)
    return getattr(sampler, "phase", None) or "test"


_TRAINER_CACHE = {}


def weights_only_trainer(base):
    """`base` (a RecBole trainer class) with weights-only checkpoints, e.g. SafeTrainer."""
    if base not in _TRAINER_CACHE:
        mixins = (
            CPUDistributedMixin,
            EpochTimingMixin,
            LossMeaningMixin,
            CandidateProtocolMixin,
            WeightsOnlyCheckpointMixin,
        )
        _TRAINER_CACHE[base] = type(f"WeightsOnly{base.__name__}", (*mixins, base), {})
    return _TRAINER_CACHE[base]
