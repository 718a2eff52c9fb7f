"""Text encoders: offline model resolution, identities, and pooling on real models."""

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest
import torch

from recbole_tfllmer.errors import ConfigError, EncoderNotFoundError, TFLLMERError
from recbole_tfllmer.text.encoders import (
    BUNDLED_MODEL_NAME,
    SentenceTransformerEncoder,
    TransformersEncoder,
    build_text_encoder,
    ensure_pad_token,
    pool_hidden_states,
    resolve_model_path,
)

TEXTS = [
    "movie_title: Toy Story. release_year: 1995. class: Animation Children's Comedy",
    "GoldenEye",
    'Title: The "Best" Lipstick (red). Categories: Beauty | Makeup | Lips. Brand: Acme ' * 8,
    "x",
]


@pytest.fixture(scope="module")
def st_default(minilm_dir):
    return SentenceTransformerEncoder(minilm_dir, device="cpu").load()


@pytest.fixture(scope="module")
def tiny_decoder_dir(tmp_path_factory, minilm_dir):
    """A random 2-layer GPT-2 with a BERT vocabulary and *no pad token*: a decoder-only LLM
    stand-in small enough for CPU tests (no modules.json, so `auto` picks transformers)."""
    from transformers import GPT2Config, GPT2Model

    d = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=30522, n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(d)
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), d)
    with open(os.path.join(minilm_dir, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    cfg["pad_token"] = None
    with open(d / "tokenizer_config.json", "w") as f:
        json.dump(cfg, f)
    return str(d)


def test_resolve_bundled_and_local(minilm_dir, tmp_path):
    assert resolve_model_path("all-MiniLM-L6-v2", False) == minilm_dir
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2", False) == minilm_dir
    assert resolve_model_path(str(tmp_path), False) == str(tmp_path)
    enc = SentenceTransformerEncoder(minilm_dir, device="cpu")
    assert enc.identity["model"] == BUNDLED_MODEL_NAME  # stable, not the site-packages path
    assert "site-packages" not in json.dumps(enc.identity)


def test_not_found_offline_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(EncoderNotFoundError) as e:
        build_text_encoder({"text_encoder": "some-org/some-llm-7b", "device": "cpu"})
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert "not a local path" in msg and "downloads are off" in msg
    assert "`text_encoder`" in msg and "`text_allow_download" in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, TFLLMERError)


def test_build_from_config_defaults(minilm_dir, tiny_decoder_dir):
    enc = build_text_encoder({"device": "cpu"})  # every text_* key missing -> yaml defaults
    assert isinstance(enc, SentenceTransformerEncoder) and not enc.loaded
    assert enc.identity == {
        **enc.identity,
        "kind": "sentence-transformers",
        "normalize": True,
        "max_length": 128,
        "dtype": "float32",
        "pooling": "mean",
    }
    llm = build_text_encoder(
        {
            "text_encoder": tiny_decoder_dir,
            "text_pooling": "last",
            "device": "cpu",
            "text_normalize": None,
            "text_batch_size": None,
        }
    )
    assert isinstance(llm, TransformersEncoder) and llm.identity["pooling"] == "last"
    assert llm.identity["normalize"] is False and llm.batch_size == 64
    forced = build_text_encoder({"text_encoder_type": "transformers", "device": "cpu"})
    assert isinstance(forced, TransformersEncoder) and forced.identity["model"] == BUNDLED_MODEL_NAME
    with pytest.raises(ConfigError, match="text_pooling"):
        build_text_encoder({"text_encoder": tiny_decoder_dir, "text_pooling": "max", "device": "cpu"})
    with pytest.raises(ConfigError, match="text_encoder_type"):
        build_text_encoder({"text_encoder_type": "onnx", "device": "cpu"})


def test_identity_tracks_what_changes_vectors(minilm_dir):
    base = SentenceTransformerEncoder(minilm_dir, device="cpu").identity
    assert SentenceTransformerEncoder(minilm_dir, device="cpu", normalize=False).identity != base
    assert SentenceTransformerEncoder(minilm_dir, device="cpu", max_length=64).identity != base
    assert SentenceTransformerEncoder(minilm_dir, device="cpu", batch_size=7).identity == base
    assert TransformersEncoder(minilm_dir, device="cpu").identity != base


def test_half_precision_falls_back_on_cpu(minilm_dir, caplog):
    with caplog.at_level(logging.WARNING):
        enc = TransformersEncoder(minilm_dir, device="cpu", dtype="float16")
    assert enc.identity["dtype"] == "float32"
    assert "text_dtype: float16" in caplog.text and "CUDA" in caplog.text
    with pytest.raises(ConfigError, match="text_dtype"):
        TransformersEncoder(minilm_dir, device="cpu", dtype="int8")


def test_sentence_transformers_default_is_unit_norm(st_default):
    emb = st_default.encode(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert st_default.encode([]).shape == (0, 384)


def test_transformers_mean_equals_st_without_normalize(minilm_dir, st_default):
    """The raw mean-pooled MiniLM vectors: the un-normalised input the norm-disparity analysis needs."""
    from sentence_transformers import SentenceTransformer

    # sentence-transformers' own pipeline minus its Normalize module, built independently
    raw_st = SentenceTransformer(
        modules=[m for m in st_default._model if type(m).__name__ != "Normalize"], device="cpu"
    )
    raw_st.max_seq_length = 128
    expected = raw_st.encode(TEXTS, batch_size=64, convert_to_numpy=True)

    enc = TransformersEncoder(minilm_dir, device="cpu", pooling="mean", batch_size=3)
    got = enc.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    norms = np.linalg.norm(got, axis=1)
    assert np.all(np.abs(norms - 1.0) > 0.1), norms  # NOT unit norm
    assert norms.max() / norms.min() > 1.5  # the norm disparity is visible even here

    st_raw = SentenceTransformerEncoder(minilm_dir, device="cpu", normalize=False)
    np.testing.assert_allclose(st_raw.encode(TEXTS), expected, atol=1e-5, rtol=0)
    forced = TransformersEncoder(minilm_dir, device="cpu", normalize=True).encode(TEXTS[:2])
    np.testing.assert_allclose(np.linalg.norm(forced, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "cls", "mean"])
def test_decoder_pooling_is_padding_side_agnostic(tiny_decoder_dir, pooling):
    """Left and right padding give the vectors of each text encoded alone (no padding)."""
    enc = TransformersEncoder(tiny_decoder_dir, pooling=pooling, device="cpu", batch_size=4).load()
    assert enc._tokenizer.pad_token == "[UNK]"  # the tokenizer had none: one was set
    alone = np.concatenate([enc.encode([t]) for t in TEXTS])
    right = enc.encode(TEXTS)
    enc._tokenizer.padding_side = "left"
    left = enc.encode(TEXTS)
    np.testing.assert_allclose(right, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(left, alone, atol=1e-5, rtol=0)


def test_pooling_rules_on_toy_tensors():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool_hidden_states(hidden, right, "last").flatten().tolist() == [2.0, 5.0]
    assert pool_hidden_states(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool_hidden_states(hidden, left, "cls").flatten().tolist() == [1.0, 6.0]
    assert pool_hidden_states(hidden, right, "mean").flatten().tolist() == [1.0, 4.5]


def test_ensure_pad_token_prefers_eos(tiny_decoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir, local_files_only=True)
    tok.eos_token = "[SEP]"
    assert tok.pad_token is None
    assert ensure_pad_token(tok) is False and tok.pad_token == "[SEP]"
    assert ensure_pad_token(tok) is False  # idempotent
