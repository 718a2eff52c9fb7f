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
import tempfile
import zipfile
from enum import Enum

import torch

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
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def config_to_json(config):
    """The final config (for reading) and the user's own options (for rebuilding) as JSON."""
    final = {k: plain_value(v) for k, v in config.final_config_dict.items()}
    external = {k: plain_value(v) for k, v in getattr(config, "external_config_dict", {}).items()}
    return json.dumps({"final": final, "external": external}, sort_keys=True)


def atomic_torch_save(obj, path):
    """torch.save to a temp file in the same directory, fsync, then rename over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, map_location=None):
    """Load a checkpoint with weights_only=True, turning every failure into a clear error."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load checkpoint {path}: it holds objects that are not plain tensors or "
            f"Python values, so loading it could execute code ({str(err).splitlines()[0]}). "
            "Checkpoints written by recbole-tfllmer never do; re-train, or load a file you trust "
            "yourself with torch.load(weights_only=False)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted and cannot be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); re-train or "
            "use another checkpoint"
        ) from None


def checkpoint_config(checkpoint):
    """(final, external) config dicts stored in a checkpoint."""
    stored = json.loads(checkpoint["config"])
    return stored["final"], stored["external"]
