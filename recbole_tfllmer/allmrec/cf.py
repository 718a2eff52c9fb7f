"""A-LLMRec's frozen collaborative model (seed-methods B.2): an ID-only backbone trained by this
plugin (RandInit) or plain RecBole on the same dataset, loaded from its checkpoint and checked
item token by item token against the run's dataset, then never updated. It gives the item
table e_i and the user (sequence) representation s_u."""

import torch
from torch import nn

from recbole_tfllmer.checkpoint import checkpoint_config, load_checkpoint
from recbole_tfllmer.collab_tables import scoring_table
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.text.hook import dataset_item_tokens

OPTION = "allmrec_cf_checkpoint"


class _Wrapped:
    """A plain RecBole model seen as the plugin's wrappers are (`.backbone`), for model_views."""

    def __init__(self, model):
        self.backbone = model
        self.gather_indexes = model.gather_indexes
        self.ITEM_SEQ_LEN = model.ITEM_SEQ_LEN


def load_frozen_cf(path, dataset):
    """(model, config) of the checkpoint, built on `dataset` (the run's training split) after its
    own data's item tokens were found identical, with every parameter frozen."""
    from recbole_tfllmer.data import create_dataset
    from recbole_tfllmer.quick_start import build_config
    from recbole_tfllmer.utils import get_model

    checkpoint = load_checkpoint(path, map_location="cpu")
    final, external = checkpoint_config(checkpoint)
    if final.get("model") == "ALLMRec" or final.get("item_init") not in (None, "random"):
        raise ConfigError(
            f"option `{OPTION}`: '{path}' is a {final.get('model')} model with item_init {final.get('item_init')!r}; "
            "A-LLMRec's collaborative model must be ID-only (RandInit: item_init random, or a plain RecBole model)"
        )
    config = build_config(model=final["model"], dataset=final["dataset"], config_dict=external)
    if config["dataset"] != dataset.config["dataset"]:
        raise ConfigError(
            f"option `{OPTION}`: '{path}' was trained on dataset {config['dataset']!r}, this run is on "
            f"{dataset.config['dataset']!r}"
        )
    own = dataset_item_tokens(create_dataset(config))
    if own != dataset_item_tokens(dataset):
        raise ConfigError(
            f"option `{OPTION}`: '{path}' was trained on another version or filtering of {config['dataset']!r} "
            f"({len(own) - 1} items, this run {dataset.item_num - 1}, or other item ids): train it with this run's "
            "data settings"
        )
    model = get_model(config["model"])(config, dataset)
    model.load_state_dict(checkpoint["state_dict"])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, config


class FrozenCF(nn.Module):
    """The frozen model's two outputs. `mode` eval keeps it deterministic (dropout off);
    train reproduces their code, where it trained with dropout on (B.7 #4)."""

    def __init__(self, model, mode="eval"):
        super().__init__()
        self.model = model
        self.mode = mode
        self.register_buffer("item_vectors", torch.from_numpy(scoring_table(model)), persistent=False)

    @property
    def dim(self):
        return int(self.item_vectors.shape[1])

    def train(self, mode=True):
        super().train(mode)
        self.model.train(mode and self.mode == "train")
        return self

    def user_vectors(self, interaction):
        """(B, d) s_u of the interaction's sequences, as the backbone scores with them."""
        from recbole_tfllmer.diagnostics.model_views import sequence_representation

        return sequence_representation(
            self.model if hasattr(self.model, "backbone") else _Wrapped(self.model), interaction
        )
