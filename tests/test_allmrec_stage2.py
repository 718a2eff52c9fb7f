"""A-LLMRec stage 2 on a tiny config-built OPT with the MiniLM tokenizer: the exact prompts, the
frozen LM, where the soft tokens go, what the loss covers, cached vs uncached candidate
likelihoods, generation and the errors (spec B.4, B.5, C.4, C.6 A-LLMRec #2)."""

import json
import logging

import pytest
import torch

from recbole_tfllmer.allmrec.candidates import (
    candidate_log_likelihoods,
    candidate_log_likelihoods_uncached,
    generate_title,
    generate_titles,
)
from recbole_tfllmer.allmrec.lm import load_causal_lm
from recbole_tfllmer.allmrec.prompts import (
    CANDIDATE_MARKER,
    DOMAINS,
    HISTORY_MARKER,
    MARKERS,
    build_prompt,
    generated_hit,
    target_text,
)
from recbole_tfllmer.allmrec.stage2 import IGNORE_INDEX, SoftPromptRecommender, train_stage2
from recbole_tfllmer.errors import ConfigError
from tests.conftest import write_tiny_opt

USER_DIM, ITEM_DIM = 16, 8
WORDS = (
    "apple river stone cloud tiger garden silver window forest candle engine harbor island jungle kettle "
    "ladder marble needle orange pepper rocket saddle tunnel valley wagon yellow zebra anchor bottle castle"
).split()
# titles of different token lengths, so the batched continuations really are padded
TITLES = [f"The {word} story" + " part two" * (i % 3) for i, word in enumerate(WORDS)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A seeded 2-layer OPT with the MiniLM tokenizer and room for the three markers."""
    return write_tiny_opt(tmp_path_factory.mktemp("tiny_opt"), extra_tokens=len(MARKERS), max_position_embeddings=512)


@pytest.fixture(scope="module")
def frozen_lm(tiny_lm_dir):
    return load_causal_lm(tiny_lm_dir, dtype="float32", device="cpu")


def new_module(frozen_lm, seed=0):
    torch.manual_seed(seed)
    return SoftPromptRecommender(frozen_lm, USER_DIM, ITEM_DIM)


def make_user(seed, n_history=10, n_candidates=20):
    """One user's inputs: random CF vectors, titles from TITLES, the prompt built from them."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(TITLES), generator=generator).tolist()
    history = [TITLES[i] for i in order[:n_history]]
    candidates = [TITLES[i] for i in order[n_history : n_history + n_candidates]]
    return {
        "user_vec": torch.randn(USER_DIM, generator=generator),
        "history_vecs": torch.randn(n_history, ITEM_DIM, generator=generator),
        "candidate_vecs": torch.randn(n_candidates, ITEM_DIM, generator=generator),
        "prompt": build_prompt(history, candidates),
        "candidate_titles": candidates,
    }


def make_batch(users, target_indices):
    return {
        "user_vecs": torch.stack([u["user_vec"] for u in users]),
        "history_vecs": [u["history_vecs"] for u in users],
        "candidate_vecs": [u["candidate_vecs"] for u in users],
        "prompts": [u["prompt"] for u in users],
        "targets": [target_text(u["candidate_titles"][t]) for u, t in zip(users, target_indices)],
    }


def scoring_args(user):
    return (user["user_vec"], user["history_vecs"], user["candidate_vecs"], user["prompt"])


# --------------------------------------------------------------------------- prompts
def test_item_prompt_is_a_llmrecs_exact_string():
    prompt = build_prompt(["Heat", "Up"], ["A b", "C", "D"])
    assert prompt == (
        ' is a user representation.This user has bought "Heat"[HistoryEmb],"Up"[HistoryEmb] in the previous. '
        "Recommend one next item for this user to buy next from the following item title set, "
        '"A b"[CandidateEmb],"C"[CandidateEmb],"D"[CandidateEmb]. The recommendation is '
    )
    assert build_prompt(["Heat"], ["A"], domain="item") == build_prompt(["Heat"], ["A"])


@pytest.mark.parametrize("domain", ["movie", "game"])
def test_movie_and_game_prompts_swap_only_the_phrases(domain):
    past, noun, verb = DOMAINS[domain]
    assert DOMAINS["movie"] == ("watched", "movie", "watch") and DOMAINS["game"] == ("played", "game", "play")
    expected = (
        build_prompt(["Heat"], ["A", "B"])
        .replace("has bought", f"has {past}")
        .replace("next item", f"next {noun}")
        .replace("to buy", f"to {verb}")
        .replace("following item", f"following {noun}")
    )
    assert build_prompt(["Heat"], ["A", "B"], domain=domain) == expected
    assert "representation.This" in expected


def test_unknown_domain_is_a_config_error():
    with pytest.raises(ConfigError, match="allmrec_domain"):
        build_prompt(["Heat"], ["A"], domain="book")


def test_target_text_keeps_the_quotes():
    assert target_text("Toy Story (1995)") == '"Toy Story (1995)"'


@pytest.mark.parametrize(
    "generated, title, hit",
    [
        ('"The Apple Story" is what I recommend', "the apple story", True),  # case-insensitive
        ('"the river story"', '"The River Story"', True),  # the target's quotes are stripped
        ('"Toy Story 2"', "Toy Story", True),  # a substring is enough (A-LLMRec's rule)
        ('"The Apple Story"', "Stone", False),
        ('apple "stone"', "apple", False),  # only the quoted span counts
        ('the "apple" and "stone"', "apple", True),  # first to last quote
        ("the apple story", "apple story", True),  # no quoted span: the whole text
        ('"anything"', "", False),  # an empty title never hits
    ],
)
def test_generated_hit_rule(generated, title, hit):
    assert generated_hit(generated, title) is hit


# --------------------------------------------------------------------------- the frozen LM
def test_lm_is_frozen_with_the_markers_registered(frozen_lm):
    tokenizer = frozen_lm.tokenizer
    ids = frozen_lm.marker_ids
    assert set(ids) == set(MARKERS) and len(set(ids.values())) == 3
    assert max(ids.values()) < frozen_lm.model.get_input_embeddings().num_embeddings
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(f'"x"{HISTORY_MARKER},"y"{CANDIDATE_MARKER}')["input_ids"])
    assert HISTORY_MARKER in tokens and CANDIDATE_MARKER in tokens  # never split into word pieces
    assert frozen_lm.eos_id == tokenizer.sep_token_id  # BERT tokenizer: no eos, so sep
    assert frozen_lm.dtype == torch.float32 and frozen_lm.hidden_size == 32
    assert not frozen_lm.model.training
    assert not any(p.requires_grad for p in frozen_lm.model.parameters())


def test_only_the_projections_are_parameters(frozen_lm):
    module = new_module(frozen_lm)
    names = {name.split(".")[0] for name, _ in module.named_parameters()}
    assert names == {"user_projection", "item_projection"}
    assert {key.split(".")[0] for key in module.state_dict()} == names
    assert [type(layer).__name__ for layer in module.user_projection] == ["Linear", "LayerNorm", "LeakyReLU", "Linear"]
    assert [type(layer).__name__ for layer in module.item_projection] == ["Linear", "LayerNorm", "GELU", "Linear"]
    assert module.user_projection[2].negative_slope == 0.01
    assert module.user_projection[0].in_features == USER_DIM and module.item_projection[0].in_features == ITEM_DIM
    module.train()
    assert not frozen_lm.model.training  # the LM is outside the module tree


def test_half_dtype_on_cpu_falls_back_to_float32(tiny_lm_dir, caplog):
    caplog.set_level(logging.WARNING)
    lm = load_causal_lm(tiny_lm_dir, dtype="bfloat16", device="cpu")
    assert lm.dtype == torch.float32
    assert "allmrec_llm_dtype" in caplog.text


# --------------------------------------------------------------------------- input assembly
def test_soft_tokens_sit_at_the_markers_and_labels_cover_the_target(frozen_lm):
    module = new_module(frozen_lm)
    users = [make_user(1, n_history=3, n_candidates=4), make_user(2, n_history=5, n_candidates=6)]
    batch = make_batch(users, [0, 5])
    embeds, mask, labels = module.assemble(**batch)
    tokenizer = frozen_lm.tokenizer
    with torch.no_grad():
        user_tokens = module.user_projection(batch["user_vecs"])
        for row, user in enumerate(users):
            prompt_ids = tokenizer(user["prompt"])["input_ids"]
            target_ids = tokenizer(batch["targets"][row], add_special_tokens=False)["input_ids"] + [frozen_lm.eos_id]
            tokens = prompt_ids + target_ids
            real = 1 + len(tokens)
            assert mask[row].tolist() == [1] * real + [0] * (mask.shape[1] - real)  # right padding
            assert torch.allclose(embeds[row, 0], user_tokens[row], atol=1e-6)
            ids = torch.tensor(tokens)
            history_at = (ids == frozen_lm.marker_ids[HISTORY_MARKER]).nonzero().flatten() + 1
            candidate_at = (ids == frozen_lm.marker_ids[CANDIDATE_MARKER]).nonzero().flatten() + 1
            assert len(history_at) == len(user["history_vecs"]) and len(candidate_at) == len(user["candidate_vecs"])
            # the module projects all of a batch's item vectors in one matmul, so a row's values may differ
            # from this per-user recomputation in the last float32 bits (BLAS blocking depends on the shape)
            assert torch.allclose(embeds[row, history_at], module.item_projection(user["history_vecs"]), atol=1e-6)
            assert torch.allclose(embeds[row, candidate_at], module.item_projection(user["candidate_vecs"]), atol=1e-6)
            plain = torch.ones(len(tokens), dtype=torch.bool)
            plain[history_at - 1] = plain[candidate_at - 1] = False
            word_embeddings = frozen_lm.model.get_input_embeddings()(ids[plain])
            assert torch.equal(embeds[row, 1:real][plain], word_embeddings)
            expected = torch.full((mask.shape[1],), IGNORE_INDEX)
            expected[1 + len(prompt_ids) : real] = torch.tensor(target_ids)
            assert torch.equal(labels[row], expected)  # the target tokens + EOS, nothing else
            assert tokenizer.decode(target_ids, skip_special_tokens=True).replace(" ", "") == batch["targets"][
                row
            ].lower().replace(" ", "")


def test_left_padding_moves_the_pads_in_front(frozen_lm):
    module = new_module(frozen_lm)
    users = [make_user(1, n_history=3, n_candidates=4), make_user(2, n_history=5, n_candidates=6)]
    batch = make_batch(users, [0, 0])
    del batch["targets"]
    right, right_mask, labels = module.assemble(**batch)
    left, left_mask, _ = module.assemble(**batch, padding_side="left")
    assert labels is None
    for row in range(2):
        real = int(right_mask[row].sum())
        assert left_mask[row].tolist() == [0] * (left_mask.shape[1] - real) + [1] * real
        assert torch.equal(left[row, -real:], right[row, :real])


def test_marker_count_mismatch_is_a_clear_error(frozen_lm):
    module = new_module(frozen_lm)
    user = make_user(3)
    with pytest.raises(ValueError, match=r"10 \[HistoryEmb\] markers but 9 item vectors"):
        module.assemble(user["user_vec"][None], [user["history_vecs"][:9]], [user["candidate_vecs"]], [user["prompt"]])
    with pytest.raises(ValueError, match=r"\[CandidateEmb\]"):
        candidate_log_likelihoods(
            module, user["user_vec"], user["history_vecs"], user["candidate_vecs"][:19], user["prompt"], TITLES[:3]
        )


# --------------------------------------------------------------------------- training
def test_two_steps_change_only_the_projections(frozen_lm):
    module = new_module(frozen_lm)
    lm_before = {k: v.clone() for k, v in frozen_lm.model.state_dict().items()}
    projections_before = {k: v.clone() for k, v in module.state_dict().items()}
    batches = [make_batch([make_user(4), make_user(5)], [0, 1]), make_batch([make_user(6), make_user(7)], [2, 3])]
    losses = train_stage2(module, lambda epoch: batches, epochs=1)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()
    for key, value in frozen_lm.model.state_dict().items():
        assert torch.equal(value, lm_before[key]), key  # bit-identical
    assert all(p.grad is None for p in frozen_lm.model.parameters())
    assert not frozen_lm.model.training
    for key, value in module.state_dict().items():
        assert not torch.equal(value, projections_before[key]), key  # every projection tensor moved


def test_loss_decreases_on_a_repeated_batch_and_is_the_target_likelihood(frozen_lm):
    module = new_module(frozen_lm)
    users = [make_user(8), make_user(9)]
    batch = make_batch(users, [4, 7])
    lines = []
    losses = train_stage2(module, lambda epoch: [batch], epochs=5, lr=1e-2, log=lines.append)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert len(lines) == 5 and lines[4].startswith(f"stage 2 epoch 4: loss {losses[4]:.4f} over 1 steps in ")
    assert max(losses[1:]) < losses[0] and losses[-1] < losses[0] - 0.1, losses
    # the loss of one example is minus its target log-likelihood per target token
    user = users[0]
    single = {key: value[:1] for key, value in batch.items()}
    with torch.no_grad():
        loss = module.loss(**single)
    title = user["candidate_titles"][4]
    n_tokens = len(frozen_lm.tokenizer(target_text(title), add_special_tokens=False)["input_ids"]) + 1
    score = candidate_log_likelihoods_uncached(module, *scoring_args(user), [title])
    assert torch.allclose(loss * n_tokens, -score[0], atol=1e-4)


# --------------------------------------------------------------------------- candidate scoring
def test_cached_likelihoods_equal_the_uncached_reference(frozen_lm):
    module = new_module(frozen_lm)
    user = make_user(10)
    titles = user["candidate_titles"]
    cached = candidate_log_likelihoods(module, *scoring_args(user), titles)
    reference = candidate_log_likelihoods_uncached(module, *scoring_args(user), titles)
    assert cached.shape == (20,) and reference.shape == (20,)
    assert torch.allclose(cached, reference, atol=1e-4), (cached - reference).abs().max()
    assert len(set(cached.tolist())) == 20
    subset = candidate_log_likelihoods(module, *scoring_args(user), titles[:3])  # other padding, same scores
    assert torch.allclose(subset, cached[:3], atol=1e-4)
    assert module.training  # scoring restored the module's mode


def test_training_on_a_target_raises_its_rank(frozen_lm):
    user = make_user(11)
    target = 7
    module = new_module(frozen_lm)

    def margin():
        scores = candidate_log_likelihoods(module, *scoring_args(user), user["candidate_titles"])
        others = torch.cat([scores[:target], scores[target + 1 :]])
        return float(scores[target] - others.max())

    before = margin()
    train_stage2(module, lambda epoch: [make_batch([user], [target])], epochs=15, lr=1e-2)
    after = margin()
    assert after > before + 1.0, (before, after)


# --------------------------------------------------------------------------- generation and errors
def test_generate_title_returns_text(frozen_lm):
    module = new_module(frozen_lm)
    users = [make_user(12), make_user(13)]
    text = generate_title(module, *scoring_args(users[0]), max_new_tokens=8)
    assert isinstance(text, str) and text.strip()
    assert all(marker not in text for marker in MARKERS)  # special tokens are skipped
    batch = make_batch(users, [0, 0])
    del batch["targets"]
    texts = generate_titles(module, **batch, max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_missing_lm_path_names_the_option(tmp_path):
    with pytest.raises(ConfigError, match="allmrec_llm"):
        load_causal_lm(tmp_path / "no_such_model")


def test_bad_dtype_and_8bit_on_cpu_are_config_errors(tiny_lm_dir):
    with pytest.raises(ConfigError, match="allmrec_llm_dtype"):
        load_causal_lm(tiny_lm_dir, dtype="int4", device="cpu")
    with pytest.raises(ConfigError, match="allmrec_llm_8bit"):
        load_causal_lm(tiny_lm_dir, dtype="float16", device="cpu", load_in_8bit=True)


def test_local_lm_trains_on_item_text_and_loads_as_allmrec_llm(tmp_path):
    """`train-local-lm`'s trainer: the next-token loss falls, the directory appears only complete,
    and it loads as A-LLMRec's frozen LM with the markers in its vocabulary; same seed, same weights."""
    from recbole_tfllmer.allmrec.local_lm import LocalLMRecipe, train_local_lm, training_lines

    lines = training_lines([f"Title: {t}" for t in TITLES], TITLES + ["No Title", None])
    assert len(lines) == 2 * len(TITLES) and lines[len(TITLES)] == f'"{TITLES[0]}"'
    recipe = LocalLMRecipe(hidden=16, layers=1, heads=2, epochs=6, batch_size=8, learning_rate=3e-3)
    reports = [train_local_lm(lines, tmp_path / name, recipe, log=lambda line: None) for name in ("a", "b")]
    losses = reports[0]["epoch_losses"]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no staging folder left
    first, second = (load_causal_lm(tmp_path / name, dtype="float32", device="cpu") for name in ("a", "b"))
    assert set(first.marker_ids) == set(MARKERS)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="no item text"):
        train_local_lm([], tmp_path / "c", recipe)
    train_local_lm(lines[:4], tmp_path / "a", recipe, log=lambda line: None)  # replaces the model in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert json.loads((tmp_path / "a" / "local_lm_report.json").read_text())["lines"] == 4


def test_train_local_lm_command_trains_on_the_dataset_item_file(tmp_path, capsys):
    """`recbole-tfllmer train-local-lm`: reads the .item file as the data hook does, writes a model
    `allmrec_llm` loads; a title field the file lacks is a one-line error naming the option."""
    import json

    import yaml

    from recbole_tfllmer.cli import main
    from tests.conftest import slice_config, write_ml100k_slice

    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=10)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(slice_config(data_path, name, tmp_path)), encoding="utf-8")
    args = ["train-local-lm", "--config_files", str(config_file), "--out", str(tmp_path / "lm")]
    tiny = ["--hidden", "16", "--layers", "1", "--heads", "2", "--epochs", "1"]
    assert main([*args, "--title-field", "movie_title", *tiny]) == 0
    assert "OPT with" in capsys.readouterr().out
    report = json.loads((tmp_path / "lm" / "local_lm_report.json").read_text())
    assert report["lines"] > 0 and report["recipe"]["hidden"] == 16
    assert load_causal_lm(tmp_path / "lm", dtype="float32", device="cpu").hidden_size == 16
    assert main([*args, "--title-field", "no_such_field", *tiny]) == 2
    assert "title field 'no_such_field' is not in item file" in capsys.readouterr().err
