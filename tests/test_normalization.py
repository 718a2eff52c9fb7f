"""Item-table normalisation: norms hold at every use, through real optimiser steps."""

import pytest
import torch
from torch import nn

from recbole_tfllmer.item_tables import (
    normalize_item_table,
    normalize_rows_once,
    raw_item_weight,
)


def train_a_few_steps(embedding, steps=25, lr=0.5):
    """Push the table around with a real loss that prefers large, uneven norms."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(embedding.parameters(), lr=lr)
    ids = torch.randint(0, embedding.num_embeddings, (64, 5))
    target = torch.randn(64, 5, embedding.embedding_dim) * 10
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((embedding(ids) - target) ** 2).mean() - embedding.weight[1:7].sum()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("scale", [1.0, 3.5])
def test_norm_holds_in_lookups_and_weight_after_training(scale):
    torch.manual_seed(1)
    embedding = nn.Embedding(30, 8, padding_idx=0)
    normalize_item_table(embedding, scale=scale)
    raw_before = raw_item_weight(embedding).detach().clone()
    train_a_few_steps(embedding)
    assert not torch.allclose(raw_item_weight(embedding), raw_before)  # training did move it

    weight = embedding.weight
    assert torch.allclose(weight[1:].norm(dim=1), torch.full((29,), scale), atol=1e-5)
    assert torch.count_nonzero(weight[0]) == 0
    looked_up = embedding(torch.tensor([[0, 1, 2, 29]]))[0]
    assert torch.allclose(looked_up[1:].norm(dim=1), torch.full((3,), scale), atol=1e-5)
    assert torch.count_nonzero(looked_up[0]) == 0


def test_learnable_scale_is_trained_and_shared_by_all_rows():
    embedding = nn.Embedding(20, 4, padding_idx=0)
    module = normalize_item_table(embedding, scale=1.0, learnable=True)
    assert any(p is module.scale for p in embedding.parameters())
    train_a_few_steps(embedding)
    learned = float(module.scale.detach())
    assert learned != pytest.approx(1.0)
    assert torch.allclose(embedding.weight[1:].norm(dim=1), torch.full((19,), learned), atol=1e-4)


def test_bert4rec_mask_row_is_an_ordinary_row():
    # BERT4Rec's table has n_items + 1 rows; the last ([mask]) is normalised like any item.
    embedding = nn.Embedding(11, 4, padding_idx=0)
    normalize_item_table(embedding, scale=2.0)
    assert embedding.weight[10].norm().item() == pytest.approx(2.0, abs=1e-6)


def test_init_only_normalisation_does_not_hold_after_training():
    embedding = nn.Embedding(30, 8, padding_idx=0)
    normalize_rows_once(embedding, scale=1.0)
    assert torch.allclose(embedding.weight[1:].norm(dim=1), torch.ones(29), atol=1e-6)
    assert torch.count_nonzero(embedding.weight[0]) == 0
    train_a_few_steps(embedding)
    norms = embedding.weight[1:].norm(dim=1)
    assert (norms - 1).abs().max() > 0.1  # the ablation: norms drift once training starts


def test_double_registration_is_refused():
    embedding = nn.Embedding(5, 3)
    normalize_item_table(embedding)
    with pytest.raises(ValueError):
        normalize_item_table(embedding)
