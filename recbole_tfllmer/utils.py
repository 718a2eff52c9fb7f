"""Model and trainer lookup: the plugin's own models first, then RecBole's (as RecBole-GNN does)."""

import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

# Models this plugin adds, by RecBole-style name -> module that defines the class.
PLUGIN_MODELS = {"TFLLMER": "recbole_tfllmer.tfllmer.tfllmer"}


def get_model(model_name):
    """Return the model class for `model_name`, looking in the plugin before RecBole."""
    module_name = PLUGIN_MODELS.get(model_name)
    if module_name is not None:
        return getattr(importlib.import_module(module_name), model_name)
    return recbole_get_model(model_name)


def is_plugin_model(model_name):
    return model_name in PLUGIN_MODELS


def get_trainer(model_type, model_name, backbone=None):
    """Return RecBole's trainer for the model (or the wrapped backbone), with checkpoints
    that reload under torch.load(weights_only=True)."""
    from recbole_tfllmer.trainer import weights_only_trainer

    base = recbole_get_trainer(model_type, backbone or model_name)
    return weights_only_trainer(base)
