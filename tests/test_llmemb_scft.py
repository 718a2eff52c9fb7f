"""SCFT (LLMEmb stage 1) on the bundled MiniLM and on a tiny config-built LLaMA: what trains, what
is saved and reloaded, what the cache key covers, and the errors (spec A.2, C.3, C.6 #3-4)."""

import json
import math
import os
import sys

import numpy as np
import pytest
import torch

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.llmemb.prompts import PromptFormat, attribute_lists_from_file, full_prompt
from recbole_tfllmer.llmemb.scft import ADAPTER_MANIFEST, SCFTEncoder, SCFTRecipe, import_peft
from recbole_tfllmer.text.encoders import TransformersEncoder
from recbole_tfllmer.text.store import encode_with_cache
from tests.conftest import write_ml100k_slice

FIELDS = ["movie_title", "release_year", "class"]
LLAMA_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
MINILM_RECIPE = SCFTRecipe(
    lora_r=4, lora_targets=("query", "value"), batch_size=4, grad_accum=1, max_steps=2, max_length=32, lr=5e-3
)
LLAMA_RECIPE = SCFTRecipe(batch_size=4, grad_accum=2, max_steps=2, max_length=32, lr=5e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """(tokens, attribute lists) of 24 items of a 15-user ml-100k slice, plus one item without attributes."""
    data_path, name = write_ml100k_slice(tmp_path_factory.mktemp("scft_data"), n_users=15)
    table, _ = attribute_lists_from_file(str(data_path / name / f"{name}.item"), "item_id", FIELDS)
    tokens = sorted(table, key=int)[:24]
    return tokens + ["no-text"], [table[t] for t in tokens] + [[]]


@pytest.fixture(scope="module")
def minilm_run(minilm_dir, catalogue, tmp_path_factory):
    """One SCFT run on MiniLM through `encode_with_cache`, with the LoRA model's state before training."""
    tokens, attributes = catalogue
    root = tmp_path_factory.mktemp("scft_minilm")
    (root / "cache").mkdir()
    encoder = SCFTEncoder(minilm_dir, attributes, MINILM_RECIPE, adapter_dir=root / "adapter", device="cpu")
    identity = encoder.identity
    assert encoder.model is None and encoder.dimension == 384  # identity and width need no weights
    encoder.build()
    before = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
    tau_before = encoder.tau.item()
    prompts = [full_prompt(a) for a in attributes]
    matrix, info = encode_with_cache(encoder, tokens, prompts, str(root / "cache"), "slice")
    return dict(
        encoder=encoder, identity=identity, before=before, tau_before=tau_before, matrix=matrix, info=info, root=root
    )


def test_only_lora_and_tau_are_trained(minilm_run, catalogue):
    encoder = minilm_run["encoder"]
    after = encoder.model.state_dict()
    changed = {k for k, v in minilm_run["before"].items() if not torch.equal(v, after[k])}
    lora = {k for k in after if "lora_" in k}
    assert lora and changed == lora  # every LoRA matrix moved, no base weight did
    assert all(k.rsplit(".", 4)[-4] in ("query", "value") for k in lora)
    assert encoder.tau.item() != minilm_run["tau_before"]
    report = encoder.train_report
    assert report["steps"] == 2 and not report["adapter_loaded"]
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["last_loss"])
    assert report["n_items"] == len(catalogue[1]) - 1  # the item without attributes is not trained on
    n_lora = sum(p.numel() for n, p in encoder.model.named_parameters() if "lora_" in n)
    assert report["trainable_parameters"] == n_lora + 1  # LoRA + tau
    assert report["tau"] == pytest.approx(encoder.tau.item())


def test_vectors_are_raw_float32_and_differ_from_the_base_model(minilm_run, minilm_dir, catalogue):
    matrix = minilm_run["matrix"]
    assert matrix.dtype == np.float32 and matrix.shape == (len(catalogue[0]), 384) and np.isfinite(matrix).all()
    assert not np.allclose(np.linalg.norm(matrix, axis=1), 1.0)  # not normalised
    base = TransformersEncoder(minilm_dir, pooling="mean", max_length=32, device="cpu", normalize=False)
    base_matrix = base.encode([full_prompt(a) for a in catalogue[1]])
    assert np.abs(matrix - base_matrix).max() > 1e-4
    # untrained LoRA (B = 0) gives the base vectors: same tokenisation and pooling as TransformersEncoder
    untrained = SCFTEncoder(minilm_dir, catalogue[1], MINILM_RECIPE, device="cpu").build()
    untrained.model.eval()
    with torch.inference_mode():
        pooled = untrained._pooled([full_prompt(a) for a in catalogue[1]]).numpy()
    np.testing.assert_allclose(pooled, base_matrix, atol=1e-5)


def test_adapter_is_saved_and_reused(minilm_run, minilm_dir, catalogue):
    tokens, attributes = catalogue
    adapter_dir = minilm_run["root"] / "adapter"
    manifest = json.loads((adapter_dir / ADAPTER_MANIFEST).read_text(encoding="utf-8"))
    assert manifest["identity"] == json.loads(json.dumps(minilm_run["identity"]))
    assert "adapter_model.safetensors" in manifest["files"]
    assert not [n for n in os.listdir(adapter_dir.parent) if n.startswith(".adapter")]  # no temp dir left

    # same identity through the cache: a hit, nothing trained, loaded or encoded
    again = SCFTEncoder(minilm_dir, attributes, MINILM_RECIPE, adapter_dir=adapter_dir, device="cpu")
    prompts = [full_prompt(a) for a in attributes]
    matrix, info = encode_with_cache(again, tokens, prompts, str(minilm_run["root"] / "cache"), "slice")
    assert info.cache_hit and info.n_encoded == 0 and again.model is None and again.train_report is None
    np.testing.assert_array_equal(matrix, minilm_run["matrix"])

    # encoding directly (a cache miss): the adapter is loaded, not retrained, and gives the same vectors
    reloaded = SCFTEncoder(minilm_dir, attributes, MINILM_RECIPE, adapter_dir=adapter_dir, device="cpu")
    vectors = reloaded.encode(prompts)
    assert reloaded.train_report["adapter_loaded"] and reloaded.train_report["steps"] == 0
    assert reloaded.tau.item() == pytest.approx(minilm_run["encoder"].tau.item())
    np.testing.assert_array_equal(vectors, minilm_run["matrix"])


def test_identity_covers_recipe_prompts_and_attributes(minilm_run, minilm_dir, catalogue):
    attributes = catalogue[1]
    identity = minilm_run["identity"]
    json.dumps(identity)  # JSON-serialisable, as the cache key needs
    assert identity["kind"] == "scft" and identity["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert identity["scft"]["lora_targets"] == ["query", "value"] and identity["peft"]

    def identity_of(items=attributes, **changes):
        return SCFTEncoder(minilm_dir, items, **(dict(recipe=MINILM_RECIPE, device="cpu") | changes)).identity

    assert identity_of() == identity
    assert identity_of(recipe=SCFTRecipe(**(MINILM_RECIPE.as_dict() | {"drop_ratio": 0.3}))) != identity
    assert identity_of(recipe=SCFTRecipe(**(MINILM_RECIPE.as_dict() | {"resample_views": False}))) != identity
    assert identity_of(pooling="last") != identity
    assert identity_of(items=attributes[:-2] + [attributes[-1], attributes[-2]]) != identity


def test_recipe_defaults_and_validation():
    recipe = SCFTRecipe()
    assert (recipe.drop_ratio, recipe.loss, recipe.tau_init, recipe.lora_r, recipe.lora_alpha) == (
        0.4,
        "soft_clip",
        3.0,
        8,
        32,
    )
    assert recipe.lora_targets == "all-linear" and recipe.total_steps(12101) == 4000
    assert SCFTRecipe(epochs=1).total_steps(12101) == math.ceil(12101 / 128)
    assert SCFTRecipe(epochs=0.5, batch_size=8, grad_accum=1).total_steps(10) == 1
    assert SCFTRecipe(lora_targets=["query"]).lora_targets == ("query",)
    for bad in ({"loss": "triplet"}, {"lora_targets": "query"}, {"batch_size": 1}, {"tau_init": 0}, {"epochs": 0}):
        with pytest.raises(ConfigError, match="scft_"):
            SCFTRecipe(**bad)


# --------------------------------------------------------------------------- decoder
@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, minilm_dir):
    """A random 2-layer LlamaModel with the MiniLM vocabulary, saved with that tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_decoder_all_linear_wraps_the_seven_projections(tiny_llama_dir, catalogue, pooling):
    from peft.tuners.lora import LoraLayer

    attributes = catalogue[1]
    encoder = SCFTEncoder(tiny_llama_dir, attributes, LLAMA_RECIPE, pooling=pooling, device="cpu")
    vectors = encoder.encode([full_prompt(a) for a in attributes])
    wrapped = [name for name, module in encoder.model.named_modules() if isinstance(module, LoraLayer)]
    assert {name.rsplit(".", 1)[-1] for name in wrapped} == LLAMA_PROJECTIONS and len(wrapped) == 7 * 2
    assert vectors.shape == (len(attributes), 32) and np.isfinite(vectors).all()
    assert encoder.train_report["steps"] == 2 and math.isfinite(encoder.train_report["last_loss"])


def test_training_is_seeded_and_leaves_the_callers_rng(tiny_llama_dir, catalogue):
    attributes = catalogue[1]
    prompts = [full_prompt(a) for a in attributes]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = SCFTEncoder(tiny_llama_dir, attributes, LLAMA_RECIPE, device="cpu").encode(prompts)
    assert torch.equal(torch.rand(3), expected_next)  # SCFT used its own RNG state
    second = SCFTEncoder(tiny_llama_dir, attributes, LLAMA_RECIPE, device="cpu").encode(prompts)
    np.testing.assert_array_equal(first, second)
    other = SCFTRecipe(**(LLAMA_RECIPE.as_dict() | {"seed": 7}))
    assert not np.array_equal(SCFTEncoder(tiny_llama_dir, attributes, other, device="cpu").encode(prompts), first)


def test_adapter_of_another_identity_or_damaged_is_retrained(tiny_llama_dir, catalogue, tmp_path):
    attributes = catalogue[1]
    adapter_dir = tmp_path / "adapter"
    SCFTEncoder(tiny_llama_dir, attributes, LLAMA_RECIPE, adapter_dir=adapter_dir, device="cpu").prepare()
    other = SCFTRecipe(**(LLAMA_RECIPE.as_dict() | {"drop_ratio": 0.2}))
    retrained = SCFTEncoder(tiny_llama_dir, attributes, other, adapter_dir=adapter_dir, device="cpu").prepare()
    assert not retrained.train_report["adapter_loaded"] and retrained.train_report["steps"] == 2
    manifest = json.loads((adapter_dir / ADAPTER_MANIFEST).read_text(encoding="utf-8"))
    assert manifest["identity"]["scft"]["drop_ratio"] == 0.2  # replaced by the new run
    with open(adapter_dir / "adapter_model.safetensors", "r+b") as f:  # a damaged weight file
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\0")
    again = SCFTEncoder(tiny_llama_dir, attributes, other, adapter_dir=adapter_dir, device="cpu").prepare()
    assert not again.train_report["adapter_loaded"]
    assert (
        SCFTEncoder(tiny_llama_dir, attributes, other, adapter_dir=adapter_dir, device="cpu")
        .prepare()
        .train_report["adapter_loaded"]
    )


def test_eos_is_appended_for_decoder_tokenizers_without_it(tiny_llama_dir, catalogue, tmp_path):
    """LLaMA's tokenizer adds no EOS and the original appended one; a BERT-style tokenizer given an EOS
    it never appends stands in for it. Truncation leaves room for the EOS."""
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "llama_eos"
    shutil.copytree(tiny_llama_dir, path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.eos_token = "[unused0]"
    tokenizer.save_pretrained(path)
    encoder = SCFTEncoder(str(path), catalogue[1], SCFTRecipe(max_length=8, max_steps=1), device="cpu")
    ids, mask = encoder.tokenize(["a b", "one two three four five six seven eight nine ten"])
    eos = encoder.tokenizer.eos_token_id
    lengths = mask.sum(1).tolist()
    assert lengths[1] == 8 and [ids[i, n - 1].item() for i, n in enumerate(lengths)] == [eos, eos]
    assert ids[0, lengths[0] :].eq(encoder.tokenizer.pad_token_id).all()  # right padding
    plain = SCFTEncoder(tiny_llama_dir, catalogue[1], SCFTRecipe(max_length=8, max_steps=1), device="cpu")
    ids, mask = plain.tokenize(["a b"])
    assert eos not in ids[0].tolist()  # the plain BERT tokenizer has no EOS: nothing added


def test_missing_peft_names_the_package(minilm_dir, catalogue, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails
    with pytest.raises(ConfigError, match="peft"):
        import_peft()
    encoder = SCFTEncoder(minilm_dir, catalogue[1], MINILM_RECIPE, device="cpu")
    with pytest.raises(ConfigError, match=r"pip install 'peft>=0.21,<0.22'"):
        encoder.encode(["The item has the following attributes: \n title is X"])


def test_infonce_with_fixed_tau_and_progress_logging(tiny_llama_dir, catalogue, caplog):
    recipe = SCFTRecipe(
        loss="infonce",
        tau_init=0.05,
        tau_learnable=False,
        resample_views=False,
        batch_size=4,
        grad_accum=1,
        max_steps=10,
    )
    encoder = SCFTEncoder(tiny_llama_dir, catalogue[1], recipe, device="cpu")
    with caplog.at_level("INFO"):
        encoder.prepare()
    report = encoder.train_report
    assert encoder.tau is None and report["tau"] == 0.05 and report["steps"] == 10
    assert report["trainable_parameters"] == sum(p.numel() for p in encoder.model.parameters() if p.requires_grad)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SCFT")]
    assert messages[0].startswith("SCFT of ") and "10 steps" in messages[0]
    assert sum(m.startswith("SCFT step ") for m in messages) == 9  # every 10% but the last, which the end line reports
    assert messages[-1].startswith("SCFT done: 10 steps") and "->" in messages[-1]


def test_scft_learns_on_a_fixed_small_set_views_of_one_item_end_closer_than_views_of_two(minilm_dir, catalogue):
    """The contrastive loss falls over a few steps on fixed view pairs, and afterwards an item's
    two views are more similar than views of different items (the point of SCFT)."""
    from recbole_tfllmer.llmemb.prompts import ViewSampler

    _, attributes = catalogue
    attributes = attributes[:16]
    recipe = SCFTRecipe(
        lora_r=8,
        lora_targets=("query", "value"),
        batch_size=16,
        grad_accum=1,
        max_steps=12,
        max_length=32,
        lr=1e-2,
        resample_views=False,
        drop_ratio=0.4,
        seed=3,
    )
    encoder = SCFTEncoder(minilm_dir, attributes, recipe, PromptFormat(), device="cpu")
    views = ViewSampler(attributes, recipe.drop_ratio, recipe.seed, resample=False, fmt=PromptFormat())
    pairs = [views.pair(i) for i in range(len(attributes))]  # the fixed pairs the encoder trains on

    def view_margin():
        a = torch.nn.functional.normalize(torch.from_numpy(encoder.encode([p[0] for p in pairs])), dim=1)
        b = torch.nn.functional.normalize(torch.from_numpy(encoder.encode([p[1] for p in pairs])), dim=1)
        sims = a @ b.T
        off = (sims.sum() - sims.diag().sum()) / (len(pairs) * (len(pairs) - 1))
        return float(sims.diag().mean() - off)

    encoder.prepare()
    report = encoder.train_report
    assert np.isfinite(report["last_loss"]) and report["last_loss"] < report["first_loss"]
    assert view_margin() > 0.0
    untrained = SCFTEncoder(
        minilm_dir, attributes, SCFTRecipe(**{**recipe.as_dict(), "lr": 1e-12}), PromptFormat(), device="cpu"
    )
    untrained.prepare()
    trained_margin, encoder = view_margin(), untrained
    assert trained_margin > view_margin()  # fine-tuning widened the gap


class _CrashAfterSave(SCFTEncoder):
    """Dies (as a killed board would) right after its `crash_at`-th step's progress is on disk."""

    crash_at = 3

    def _save_progress(self, done, *args):
        super()._save_progress(done, *args)
        if done == self.crash_at:
            raise KeyboardInterrupt


def test_interrupted_scft_resumes_to_the_uninterrupted_adapter(tiny_llama_dir, catalogue, tmp_path, caplog):
    attributes = catalogue[1]
    prompts = [full_prompt(a) for a in attributes]
    recipe = SCFTRecipe(batch_size=4, grad_accum=2, max_steps=6, max_length=32, lr=5e-3, lora_dropout=0.3)
    reference = SCFTEncoder(tiny_llama_dir, attributes, recipe, device="cpu")
    expected = reference.encode(prompts)

    adapter_dir = tmp_path / "adapter"
    crashing = _CrashAfterSave(tiny_llama_dir, attributes, recipe, adapter_dir=adapter_dir, progress_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        crashing.prepare()
    progress = tmp_path / "adapter.progress.pth"
    assert progress.is_file() and not adapter_dir.exists()  # unfinished: progress only, no adapter

    caplog.set_level("INFO")
    resumed = SCFTEncoder(tiny_llama_dir, attributes, recipe, adapter_dir=adapter_dir, device="cpu")
    vectors = resumed.encode(prompts)
    assert "SCFT resumed at step 3/6" in caplog.text
    assert resumed.train_report["resumed_at_step"] == 3 and resumed.train_report["steps"] == 6
    np.testing.assert_array_equal(vectors, expected)  # bit for bit the uninterrupted run
    assert resumed.train_report["last_loss"] == reference.train_report["last_loss"]
    assert resumed.tau_value() == reference.tau_value()
    assert (adapter_dir / ADAPTER_MANIFEST).is_file() and not progress.exists()  # saved, progress dropped


def test_progress_of_another_recipe_is_ignored(tiny_llama_dir, catalogue, tmp_path, caplog):
    attributes = catalogue[1]
    recipe = SCFTRecipe(batch_size=4, grad_accum=1, max_steps=4, max_length=32, lr=5e-3)
    crashing = _CrashAfterSave(tiny_llama_dir, attributes, recipe, adapter_dir=tmp_path / "a", progress_seconds=0)
    crashing.crash_at = 2
    with pytest.raises(KeyboardInterrupt):
        crashing.prepare()
    caplog.set_level("INFO")
    other = SCFTRecipe(**(recipe.as_dict() | {"seed": 9}))
    fresh = SCFTEncoder(tiny_llama_dir, attributes, other, adapter_dir=tmp_path / "a", device="cpu").prepare()
    assert "belongs to another recipe or catalogue: training from step 0" in caplog.text
    assert fresh.train_report["resumed_at_step"] == 0 and not (tmp_path / "a.progress.pth").exists()
