"""Checkpoints that load with torch.load(weights_only=True).

RecBole 1.2.1 pickles its whole Config into every checkpoint, so on torch>=2.6 (where
torch.load defaults to weights_only=True) it cannot reload its own best model. We keep
RecBole's checkpoint layout but store only tensors and plain Python values (the config as
a JSON string), write atomically, and load with weights_only=True: a checkpoint carrying a
pickle payload is rejected without executing anything.
"""

import json
import os
import pickle
import random
import zipfile
from enum import Enum

import numpy as np
import torch

from recbole_tfllmer.atomic import atomic_write
from recbole_tfllmer.errors import CheckpointError

FORMAT = "recbole_tfllmer.checkpoint/1"


def plain_value(value):
    """A JSON-friendly version of a config value (enums and devices become strings)."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    # Exact builtin types: numpy scalars (np.float64 subclasses float) would be pickled with
    # a numpy global that torch.load(weights_only=True) refuses.
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return str(value)


def config_to_json(config):
    """The final config (for reading) and the user's own options (for rebuilding) as JSON."""
    final = {k: plain_value(v) for k, v in config.final_config_dict.items()}
    external = {k: plain_value(v) for k, v in getattr(config, "external_config_dict", {}).items()}
    return json.dumps({"final": final, "external": external}, sort_keys=True)


def _tensor_bytes(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def atomic_torch_save(obj, path):
    """torch.save through an atomic write: a crash never leaves a half-written checkpoint, and
    a full disk is a DiskFullError that keeps the previous checkpoint."""
    atomic_write(
        path,
        lambda f: torch.save(obj, f),
        size_hint=_tensor_bytes(obj),
        what_to_do="free space on it or set `checkpoint_dir` to a disk with room (the previous checkpoint is kept)",
    )


PLUGIN_KEYS = ("state_dict", "config")


def load_checkpoint(path, map_location=None, required=PLUGIN_KEYS):
    """Load a checkpoint with weights_only=True, turning every failure into a clear error.

    `required`: keys the checkpoint must have (by default those of every checkpoint this
    plugin writes), so a foreign `.pth` (a bare state_dict, another library's file) is
    reported as such instead of failing later with a KeyError.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint file '{path}' does not exist; pass the .pth file a run wrote (its `model_file`, "
            "under `checkpoint_dir`)"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickling_detail(err)
        raise CheckpointError(
            f"refused to load checkpoint '{path}': it holds objects that are not plain tensors or "
            f"Python values, so loading it could execute code ({detail}). "
            "Checkpoints written by recbole-tfllmer never do (RecBole's own pickle its Config); re-train, "
            "or load a file you trust yourself with torch.load(weights_only=False)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint '{path}' is truncated or corrupted and cannot be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); re-train or "
            "use another checkpoint"
        ) from None
    return require_keys(checkpoint, path, required)


# -- random number generator states ----------------------------------------------------
# Stored as tensors and plain Python values so the checkpoint still loads with
# weights_only=True. RecBole seeds every generator once, in init_seed and in each
# DataLoader's own torch.Generator; a resumed run that did not restore them would draw
# other dropout masks and another shuffle than the uninterrupted run from the same seed.
def rng_state(generator=None):
    """The global RNG states (python, numpy, torch CPU and CUDA) and `generator`'s, if any."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def set_rng_state(state):
    """Restore what `rng_state` saved (the `generator` entry is the caller's to restore)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def require_keys(checkpoint, path, keys):
    """CheckpointError unless `checkpoint` is a dict with every key (i.e. one this plugin wrote)."""
    missing = [k for k in keys if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(
            f"checkpoint '{path}' is not a recbole-tfllmer checkpoint (it has no {', '.join(map(repr, missing))}); "
            "load a .pth file written by recbole-tfllmer's trainer, or re-train"
        )
    return checkpoint


def _unpickling_detail(err):
    """The line of torch's weights_only message that names the refused global, if any."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln:
            return ln
    return lines[0] if lines else type(err).__name__


def checkpoint_config(checkpoint):
    """(final, external) config dicts stored in a checkpoint."""
    stored = json.loads(checkpoint["config"])
    return stored["final"], stored["external"]


def load_model_state(model, checkpoint, path):
    """load_state_dict + other parameters, with a checkpoint of another model named as such."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this model ({str(err).splitlines()[0]}): it was written for "
            f"another model, backbone, dataset or embedding size (checkpoint: model "
            f"{checkpoint.get('model')!r}, backbone {checkpoint.get('backbone')!r}). Use the config it was "
            "trained with (load_data_and_model(file) rebuilds it from the checkpoint), or re-train"
        ) from None
    model.load_other_parameter(checkpoint.get("other_parameter"))
