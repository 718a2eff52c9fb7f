"""Item-embedding normalisation (TF-LLMER fix 1).

The conditioning bound of the paper holds only while every item vector keeps the same
norm, so the table is re-normalised at *every* use: a torch parametrization makes
`embedding.weight` return r * w_i / ||w_i|| for each raw row w_i, which covers input
lookups (`embedding(ids)`) and output scoring (`embedding.weight @ h`) without touching
backbone code. The padding row stays exactly zero.

Note (method-notes, "an implementation detail that changes results"): the gradient that
reaches raw row w_i is scaled by r / ||w_i||, so the raw rows' initial norms act as a
per-item step size on the sphere; `init_scale` controls them.
"""

import torch
from torch import nn
from torch.nn.utils import parametrize

EPS = 1e-12


class RowNormalization(nn.Module):
    """Parametrization w -> r * w / ||w|| per row, with row `padding_idx` forced to zero."""

    def __init__(self, num_rows, scale=1.0, learnable=False, padding_idx=0):
        super().__init__()
        scale = torch.tensor(float(scale))
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        mask = torch.ones(num_rows, 1)
        if padding_idx is not None:
            mask[padding_idx] = 0.0
        self.register_buffer("row_mask", mask)

    def forward(self, weight):
        norms = weight.norm(dim=1, keepdim=True).clamp_min(EPS)
        return weight * (self.scale * self.row_mask.to(weight.dtype) / norms)


def normalize_item_table(embedding, scale=1.0, learnable=False, padding_idx=0):
    """Install RowNormalization on `embedding.weight` (always-on normalisation), after any
    parametrisation already there (LLMEmb's adapter: normalisation of the adapted rows)."""
    if parametrize.is_parametrized(embedding, "weight") and any(
        isinstance(m, RowNormalization) for m in embedding.parametrizations.weight
    ):
        raise ValueError("the item table is already normalised")
    module = RowNormalization(embedding.num_embeddings, scale, learnable, padding_idx)
    parametrize.register_parametrization(embedding, "weight", module)
    return module


@torch.no_grad()
def normalize_rows_once(embedding, scale=1.0, padding_idx=0):
    """Rescale every row to norm `scale` once (initialisation-only normalisation, an ablation)."""
    weight = embedding.weight
    weight.mul_(scale / weight.norm(dim=1, keepdim=True).clamp_min(EPS))
    if padding_idx is not None:
        weight[padding_idx].zero_()


def raw_item_weight(embedding):
    """The trainable raw table (the parametrization's input when one is installed)."""
    if parametrize.is_parametrized(embedding, "weight"):
        return embedding.parametrizations.weight.original
    return embedding.weight
