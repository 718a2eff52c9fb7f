"""LLMEmb's item table (seed-methods A.4.1): a frozen PCA table of the fine-tuned LLM vectors
behind a trainable two-layer linear adapter, installed as a parametrisation of the backbone's
item table(s), so every lookup and every score reads adapter(E) without backbone changes
(the pattern of item_tables.RowNormalization).

The adapter is W2 (W1 e + c1) + c2 with no activation (their code), an affine map of rank
<= d: the whole table is computed as E (W2 W1)^T + (W2 c1 + c2), the same function and the
same gradients as the two layers applied row by row, at (P/2 + d)/d of the cost saved.
"""

import torch
from torch import nn
from torch.nn.utils import parametrize


class AdaptedItemTable(nn.Module):
    """Parametrisation weight -> [0; adapter(E_1..E_{n-1}); extra rows]: row 0 (padding) is
    zero, extra rows (BERT4Rec's [mask]) are trainable vectors, N(0, 0.01) as in their code."""

    def __init__(self, llm_table, out_dim, hidden_dim, extra_rows=0, freeze_llm_table=True):
        super().__init__()
        llm_table = torch.as_tensor(llm_table, dtype=torch.float32)
        if freeze_llm_table:
            # derived from the data on every build (cache + PCA): not stored in checkpoints
            self.register_buffer("llm_table", llm_table, persistent=False)
        else:
            self.llm_table = nn.Parameter(llm_table)
        self.first = nn.Linear(llm_table.shape[1], hidden_dim)
        self.second = nn.Linear(hidden_dim, out_dim)
        nn.init.xavier_normal_(self.first.weight)  # their BaseModel init; biases keep torch's default
        nn.init.xavier_normal_(self.second.weight)
        self.extra = nn.Parameter(torch.randn(extra_rows, out_dim) * 0.01) if extra_rows else None

    def affine(self):
        """(W, b) of the composed map x -> x W^T + b."""
        weight = self.second.weight @ self.first.weight
        bias = self.second.weight @ self.first.bias + self.second.bias
        return weight, bias

    def item_rows(self, ids):
        """adapter(E_ids) for item ids >= 1 (the alignment loss reads only the batch's targets)."""
        weight, bias = self.affine()
        return self.llm_table[ids] @ weight.T + bias

    def forward(self, original):
        weight, bias = self.affine()
        items = self.llm_table[1:] @ weight.T + bias
        rows = [items.new_zeros(1, items.shape[1]), items]
        if self.extra is not None:
            rows.append(self.extra)
        return torch.cat(rows).to(original.dtype)


def install_adapter(table, adapter):
    """Put `adapter` on `table.weight`; the raw weight it replaces stops training."""
    if parametrize.is_parametrized(table, "weight"):
        raise ValueError("the item table is already parametrized")
    expected = adapter.llm_table.shape[0] + (0 if adapter.extra is None else adapter.extra.shape[0])
    if table.weight.shape[0] != expected:
        raise AssertionError(f"item table has {table.weight.shape[0]} rows, the adapter makes {expected}")
    table.weight.requires_grad_(False)
    parametrize.register_parametrization(table, "weight", adapter)
    table.parametrizations.weight.original.requires_grad_(False)
