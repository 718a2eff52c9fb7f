"""LLMEmb attribute prompts, attribute-drop views and the contrastive losses (spec A.1, A.2.2, A.2.3)."""

import math
import random

import numpy as np
import pytest
import torch

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.llmemb.losses import LOSSES, contrastive_loss, info_nce, soft_clip_contrastive
from recbole_tfllmer.llmemb.prompts import (
    PromptFormat,
    ViewSampler,
    attribute_lists_from_file,
    draw_view,
    full_prompt,
    item_attributes,
)

FIELDS = ["movie_title", "release_year", "class"]
INSTRUCTION_LINE = "The item has the following attributes: \n"


def view_attributes(view):
    """The attributes of a view, read back the way the original split prompts."""
    assert view.startswith(INSTRUCTION_LINE)
    parts = view[len(INSTRUCTION_LINE) :].split(";")
    assert all(p.startswith(" ") for p in parts)  # each kept its one leading space
    return [p[1:] for p in parts]


@pytest.fixture(scope="module")
def slice_attributes(ml_slice):
    data_path, name = ml_slice
    attributes, fields = attribute_lists_from_file(str(data_path / name / f"{name}.item"), "item_id", FIELDS)
    assert fields == FIELDS
    return attributes


# --------------------------------------------------------------------------- prompts
def test_attribute_lists_from_the_slice(slice_attributes, ml_slice):
    data_path, name = ml_slice
    assert slice_attributes["1"] == [
        "movie_title is Toy Story",
        "release_year is 1995",
        "class is Animation Children's Comedy",
    ]
    assert all(len(a) == 3 for a in slice_attributes.values())  # every slice item has all three fields
    default, fields = attribute_lists_from_file(str(data_path / name / f"{name}.item"), "item_id", None)
    assert fields == FIELDS and default == slice_attributes  # fields None = every token / token_seq field


def test_full_prompt_joins_without_trailing_separator():
    fmt = PromptFormat(names=(("movie_title", "title"),))
    attributes = item_attributes({"movie_title": " Heat ", "release_year": "1995", "class": "  "}, FIELDS, fmt)
    assert attributes == ["title is Heat", "release_year is 1995"]  # empty after stripping = left out
    assert (
        full_prompt(attributes, fmt) == "The item has the following attributes: \n title is Heat; release_year is 1995"
    )
    assert fmt.display_name("class") == "class"


def test_values_are_cut_and_cleaned():
    fmt = PromptFormat(max_chars=10)
    attributes = item_attributes({"a": "x;y\nz\r" + "w" * 20, "b": "ab;cd"}, ["a", "b"], fmt)
    assert attributes == ["a is x.y z wwww", "b is ab.cd"]
    value = attributes[0][len("a is ") :]
    assert len(value) == 10 and ";" not in value and "\n" not in value and "\r" not in value


def test_bad_template_is_a_config_error():
    with pytest.raises(ConfigError, match="attr_template"):
        PromptFormat(attr_template="{name} {year}")


def test_views_keep_k_minus_floor_k_rho(slice_attributes):
    rng = random.Random(0)
    three = slice_attributes["1"]
    for _ in range(20):
        kept = view_attributes(draw_view(three, 0.4, rng))
        assert len(kept) == 2 and len(set(kept)) == 2 and set(kept) <= set(three)
    assert view_attributes(draw_view(["only one"], 0.4, rng)) == ["only one"]  # k = 1 keeps it (A.7 #3)
    assert view_attributes(draw_view(["only one"], 1.0, rng)) == ["only one"]
    two = ["a is 1", "b is 2"]
    assert sorted(view_attributes(draw_view(two, 0.4, rng))) == two  # floor(0.8) = 0: a re-ordering
    five = [f"f{i} is {i}" for i in range(5)]
    assert len(view_attributes(draw_view(five, 0.4, rng))) == 3


def test_an_undropped_view_in_order_is_the_full_prompt():
    class NoShuffle(random.Random):
        def shuffle(self, x):
            pass

    attributes = ["a is 1", "b is 2", "c is 3"]
    assert draw_view(attributes, 0.0, NoShuffle()) == full_prompt(attributes)


def test_views_are_random_subsets_and_orders(slice_attributes):
    rng = random.Random(1)
    views = {draw_view(slice_attributes["1"], 0.4, rng) for _ in range(60)}
    assert len(views) == 6  # 3 choices of the dropped attribute x 2 orders


def test_sampler_is_reproducible_for_a_seed(slice_attributes):
    items = [slice_attributes[t] for t in sorted(slice_attributes)[:10]]
    first = ViewSampler(items, 0.4, seed=7, resample=True)
    second = ViewSampler(items, 0.4, seed=7, resample=True)
    calls = [3, 1, 3, 0, 9]
    assert [first.pair(i) for i in calls] == [second.pair(i) for i in calls]
    other = ViewSampler(items, 0.4, seed=8, resample=True)
    assert [other.pair(i) for i in calls] != [ViewSampler(items, 0.4, seed=7).pair(i) for i in calls]
    fresh = [first.pair(3) for _ in range(20)]
    assert len(set(fresh)) > 1  # resampling draws new views every call


def test_fixed_views_repeat_the_pair(slice_attributes):
    items = [slice_attributes[t] for t in sorted(slice_attributes)[:10]]
    fixed = ViewSampler(items, 0.4, seed=7, resample=False)
    pair = fixed.pair(4)
    assert all(fixed.pair(4) == pair for _ in range(5))
    other_order = ViewSampler(items, 0.4, seed=7, resample=False)
    other_order.pair(9)
    assert other_order.pair(4) == pair  # depends on (seed, item), not on the call order
    pairs = [fixed.pair(i) for i in range(10)]
    assert any(a != b for a, b in pairs)  # the two views of a pair are independent draws


def test_bad_drop_ratio_is_a_config_error():
    with pytest.raises(ConfigError, match="scft_drop_ratio"):
        ViewSampler([["a is 1"]], 1.5, seed=0)


# --------------------------------------------------------------------------- losses
A = np.array([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]])
B = np.array([[0.9, 0.1], [0.0, 1.0], [-0.5, -0.7]])


def log_softmax(values):
    m = max(values)
    log_z = m + math.log(sum(math.exp(v - m) for v in values))
    return [v - log_z for v in values]


def soft_clip_by_hand(a, b, tau):
    """Spec A.2.3 with explicit loops."""
    n = len(a)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))  # noqa: E731
    logits = [[dot(a[i], b[j]) / tau for j in range(n)] for i in range(n)]
    targets = []
    for i in range(n):
        row = [tau * 0.5 * (dot(a[i], a[j]) + dot(b[i], b[j])) for j in range(n)]
        targets.append([math.exp(v) for v in log_softmax(row)])
    row_log_p = [log_softmax(logits[i]) for i in range(n)]
    col_log_p = [log_softmax([logits[i][j] for i in range(n)]) for j in range(n)]
    row_term = sum(-sum(targets[i][j] * row_log_p[i][j] for j in range(n)) for i in range(n)) / n
    column_term = sum(-sum(targets[i][j] * col_log_p[j][i] for i in range(n)) for j in range(n)) / n
    return 0.5 * (row_term + column_term), row_term, column_term


def test_soft_clip_matches_a_hand_computation():
    tau = 3.0
    expected, row_term, column_term = soft_clip_by_hand(A.tolist(), B.tolist(), tau)
    got = soft_clip_contrastive(torch.tensor(A), torch.tensor(B), tau).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert row_term != pytest.approx(column_term)  # the two terms differ here, so both are checked
    swapped = soft_clip_by_hand(B.tolist(), A.tolist(), tau)[0]
    assert soft_clip_contrastive(torch.tensor(B), torch.tensor(A), tau).item() == pytest.approx(swapped, rel=1e-12)
    assert soft_clip_contrastive(
        torch.tensor(A), torch.tensor(B), torch.tensor(0.7, dtype=torch.float64)
    ).item() == pytest.approx(soft_clip_by_hand(A.tolist(), B.tolist(), 0.7)[0], rel=1e-12)


def test_soft_clip_gradients_reach_tau_and_both_inputs():
    a = torch.tensor(A, requires_grad=True)
    b = torch.tensor(B, requires_grad=True)
    tau = torch.nn.Parameter(torch.tensor(3.0, dtype=torch.float64))
    soft_clip_contrastive(a, b, tau).backward()
    assert tau.grad is not None and tau.grad.item() != 0.0
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    # tau's gradient flows through the targets too: it matches the hand formula's finite difference
    eps = 1e-6
    numeric = (
        soft_clip_by_hand(A.tolist(), B.tolist(), 3.0 + eps)[0]
        - soft_clip_by_hand(A.tolist(), B.tolist(), 3.0 - eps)[0]
    ) / (2 * eps)
    assert tau.grad.item() == pytest.approx(numeric, rel=1e-5)


def test_info_nce_matches_a_hand_computation():
    tau = 0.5
    a = A / np.linalg.norm(A, axis=1, keepdims=True)
    b = B / np.linalg.norm(B, axis=1, keepdims=True)
    logits = a @ b.T / tau
    rows = -np.mean([log_softmax(list(logits[i]))[i] for i in range(3)])
    cols = -np.mean([log_softmax(list(logits[:, j]))[j] for j in range(3)])
    assert info_nce(torch.tensor(A), torch.tensor(B), tau).item() == pytest.approx(0.5 * (rows + cols), rel=1e-12)
    raw = A @ B.T / tau
    raw_rows = -np.mean([log_softmax(list(raw[i]))[i] for i in range(3)])
    raw_cols = -np.mean([log_softmax(list(raw[:, j]))[j] for j in range(3)])
    got = info_nce(torch.tensor(A), torch.tensor(B), tau, cosine=False).item()
    assert got == pytest.approx(0.5 * (raw_rows + raw_cols), rel=1e-12)


def test_duplicate_rows_give_a_finite_loss():
    a = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    for name in LOSSES:
        loss = contrastive_loss(name, a, b, 3.0)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
        a.grad = None
    # two identical items: the soft targets split their mass evenly between them
    expected = soft_clip_by_hand(a.tolist(), b.tolist(), 3.0)[0]
    assert contrastive_loss("soft_clip", a, b, 3.0).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="soft_clip"):
        contrastive_loss("triplet", torch.zeros(2, 2), torch.zeros(2, 2), 1.0)
