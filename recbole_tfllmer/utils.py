"""Model and trainer lookup: the plugin's own models first, then RecBole's (as RecBole-GNN does)."""

import difflib
import importlib
import pkgutil

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

# Models this plugin adds, by RecBole-style name -> module that defines the class.
PLUGIN_MODELS = {
    "TFLLMER": "recbole_tfllmer.tfllmer.tfllmer",
    "LLMEmb": "recbole_tfllmer.llmemb.llmemb",
    "ALLMRec": "recbole_tfllmer.allmrec.allmrec",
}
# Plugin models that train their own way (the others train as their backbone does).
PLUGIN_TRAINERS = {"ALLMRec": ("recbole_tfllmer.allmrec.trainer", "ALLMRecTrainer")}


RECBOLE_MODEL_PACKAGES = ("general", "context_aware", "sequential", "knowledge_aware", "exlib")


def recbole_model_names():
    """RecBole's model names as its get_model looks them up (module file names, lower case),
    found without importing the models (exlib's would import lightgbm / xgboost)."""
    import recbole.model

    names = set()
    for package in RECBOLE_MODEL_PACKAGES:
        path = [p + f"/{package}_recommender" for p in recbole.model.__path__]
        names.update(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    return names


def get_model(model_name):
    """Return the model class for `model_name`, looking in the plugin before RecBole; an
    unknown name is a ConfigError with the nearest names (RecBole would fail importing an
    unrelated optional library)."""
    module_name = PLUGIN_MODELS.get(model_name)
    if module_name is not None:
        return getattr(importlib.import_module(module_name), model_name)
    if isinstance(model_name, str) and model_name.lower() not in recbole_model_names():
        from recbole_tfllmer.backbones import SUPPORTED_BACKBONES
        from recbole_tfllmer.errors import ConfigError

        known = {n.lower(): n for n in recbole_model_names()}
        known.update({n.lower(): n for n in (*PLUGIN_MODELS, *SUPPORTED_BACKBONES)})
        near = difflib.get_close_matches(model_name.lower(), list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(known[n] for n in near)}?" if near else ""
        raise ConfigError(
            f"unknown model {model_name!r} (-m/--model or `model`){hint} "
            "Use TFLLMER, LLMEmb, ALLMRec or a RecBole model name, e.g. SASRec"
        )
    return recbole_get_model(model_name)


def is_plugin_model(model_name):
    return model_name in PLUGIN_MODELS


def get_trainer(model_type, model_name, backbone=None):
    """Return RecBole's trainer for the model (or the wrapped backbone), with checkpoints
    that reload under torch.load(weights_only=True)."""
    from recbole_tfllmer.trainer import weights_only_trainer

    if model_name in PLUGIN_TRAINERS:
        module, name = PLUGIN_TRAINERS[model_name]
        base = getattr(importlib.import_module(module), name)
    else:
        base = recbole_get_trainer(model_type, backbone or model_name)
    return weights_only_trainer(base)
