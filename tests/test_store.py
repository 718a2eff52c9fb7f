"""Embedding cache (content keys, atomic commits, crash resume) and bring-your-own import."""

import glob
import json
import logging
import os
from datetime import datetime

import numpy as np
import pytest

from recbole_tfllmer.errors import ConfigError, EmbeddingFileError, TFLLMERError
from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir
from recbole_tfllmer.text.store import (
    DEFAULT_CHUNK_SIZE,
    cache_paths,
    compute_cache_key,
    encode_with_cache,
    file_sha256,
    load_precomputed_embeddings,
    resolve_cache_dir,
)

TOKENS = [f"i{k:02d}" for k in range(10)]
TEXTS = [f"title: Item number {k}. brand: Brand {k % 3}" for k in range(10)]


class CountingEncoder:
    """Wraps a real encoder and counts the texts it is asked to encode."""

    def __init__(self, inner, fail_after_calls=None):
        self.inner, self.n_texts, self.calls, self.fail_after_calls = inner, 0, 0, fail_after_calls

    @property
    def identity(self):
        return self.inner.identity

    @property
    def loaded(self):
        return self.inner.loaded

    def load(self):
        self.inner.load()
        return self

    def encode(self, texts):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.n_texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def reference(encoder):
    return encoder.encode(TEXTS)


def run(encoder, cache_dir, texts=TEXTS, tokens=TOKENS, **kw):
    counting = CountingEncoder(encoder) if not isinstance(encoder, CountingEncoder) else encoder
    matrix, info = encode_with_cache(counting, tokens, texts, str(cache_dir), "toy", template="T", fields=["f"], **kw)
    return matrix, info, counting


def test_cache_hit_encodes_nothing(encoder, reference, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    m1, info1, c1 = run(encoder, tmp_path)
    assert not info1.cache_hit and info1.n_encoded == 10 and c1.n_texts == 10
    np.testing.assert_allclose(m1, reference, atol=1e-6)
    assert "encoded 10 items in" in caplog.text

    caplog.clear()
    m2, info2, c2 = run(encoder, tmp_path)
    assert info2.cache_hit and info2.n_encoded == 0 and c2.n_texts == 0 and c2.calls == 0
    assert info2.cache_file == info1.cache_file
    np.testing.assert_array_equal(m1, m2)
    assert f"embedding cache hit: {info1.cache_file} (0 items encoded" in caplog.text

    # the sidecar describes the artefact completely
    with open(info1.cache_file[: -len(".npy")] + ".json") as f:
        meta = json.load(f)
    assert meta["tokens"] == TOKENS and meta["dim"] == 384 and meta["n_items"] == 10
    assert meta["model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["key"] == info1.key
    assert meta["npy_sha256"] == file_sha256(info1.cache_file)
    assert meta["components"]["template"] == "T" and meta["components"]["fields"] == ["f"]
    assert meta["components"]["encoder"]["normalize"] is True
    datetime.fromisoformat(meta["created_at"])
    assert os.path.basename(info1.cache_file) == f"toy-{info1.key[:16]}.emb.npy"
    assert not glob.glob(str(tmp_path / "*.partial")) and not glob.glob(str(tmp_path / ".*.tmp"))


def test_changed_text_or_model_gives_new_file(encoder, minilm_raw, tmp_path):
    _, base, _ = run(encoder, tmp_path)
    texts = list(TEXTS)
    texts[3] = "title: Item number 3 (2nd edition). brand: Brand 0"
    m, changed, c = run(encoder, tmp_path, texts=texts)
    assert changed.cache_file != base.cache_file and not changed.cache_hit and c.n_texts == 10
    np.testing.assert_allclose(m[3], encoder.encode([texts[3]])[0], atol=1e-6)
    # same texts, other row order -> other key (rows follow tokens)
    _, reordered, _ = run(encoder, tmp_path, texts=TEXTS[::-1], tokens=TOKENS[::-1])
    assert reordered.cache_file != base.cache_file
    # a different model identity (here: MiniLM without its Normalize module)
    m_raw, other, c_raw = run(minilm_raw, tmp_path)
    assert other.cache_file != base.cache_file and c_raw.n_texts == 10
    assert not np.allclose(np.linalg.norm(m_raw, axis=1), 1.0)
    # template and fields are part of the key too
    k1 = compute_cache_key(encoder.identity, "A {x}", ["x"], TOKENS, TEXTS)[0]
    assert k1 != compute_cache_key(encoder.identity, "B {x}", ["x"], TOKENS, TEXTS)[0]
    assert k1 != compute_cache_key(encoder.identity, "A {x}", ["y"], TOKENS, TEXTS)[0]
    assert k1 != compute_cache_key(encoder.identity, "A {x}", ["x"], TOKENS, TEXTS, chunk_size=1000)[0]
    assert len(glob.glob(str(tmp_path / "*.emb.npy"))) == 4


@pytest.fixture(scope="module")
def minilm_raw():
    return SentenceTransformerEncoder(bundled_model_dir(), device="cpu", normalize=False)


def _paths(encoder, tmp_path, chunk_size=DEFAULT_CHUNK_SIZE):
    key = compute_cache_key(encoder.identity, "T", ["f"], TOKENS, TEXTS, chunk_size)[0]
    return cache_paths(str(tmp_path), "toy", key)


def test_leftover_temp_and_npy_without_json_are_never_loaded(encoder, reference, tmp_path, caplog):
    npy, js, _ = _paths(encoder, tmp_path)
    # a killed writer's temp file and an uncommitted .npy (garbage of the right name)
    (tmp_path / f".{os.path.basename(npy)}.abc123.tmp").write_bytes(b"\x93NUMPY garbage")
    np.save(npy, np.zeros((10, 384), dtype=np.float32))
    with caplog.at_level(logging.WARNING):
        m, info, c = run(encoder, tmp_path)
    assert not info.cache_hit and c.n_texts == 10
    assert "has no metadata sidecar" in caplog.text and npy in caplog.text
    np.testing.assert_allclose(m, reference, atol=1e-6)
    assert os.path.isfile(js)


def test_interrupted_commit_leaves_nothing_loadable(encoder, reference, tmp_path, monkeypatch):
    import recbole_tfllmer.text.store as store

    real = store._save_json_atomic

    def killed_before_final_json(path, obj):
        if path.endswith(".emb.json"):
            raise KeyboardInterrupt("killed between .npy and .json")
        return real(path, obj)

    monkeypatch.setattr(store, "_save_json_atomic", killed_before_final_json)
    with pytest.raises(KeyboardInterrupt):
        run(encoder, tmp_path)
    monkeypatch.undo()
    npy, js, _ = _paths(encoder, tmp_path)
    assert os.path.isfile(npy) and not os.path.isfile(js)
    m, info, c = run(encoder, tmp_path)
    assert not info.cache_hit and info.n_chunks_resumed == 1 and c.n_texts == 0  # chunk reused, not trusted npy
    np.testing.assert_allclose(m, reference, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "wrong_tokens"])
def test_corrupted_cache_is_recomputed_with_warning(encoder, reference, tmp_path, caplog, damage):
    _, first, _ = run(encoder, tmp_path)
    npy = first.cache_file
    js = npy[: -len(".npy")] + ".json"
    if damage == "truncate":
        with open(npy, "r+b") as f:
            f.truncate(os.path.getsize(npy) // 2)
    elif damage == "flip_byte":
        data = bytearray(open(npy, "rb").read())
        data[-5] ^= 0xFF
        open(npy, "wb").write(bytes(data))
    else:
        meta = json.load(open(js))
        meta["tokens"][0] = "someone-else"
        json.dump(meta, open(js, "w"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        m, info, c = run(encoder, tmp_path)
    assert not info.cache_hit and c.n_texts == 10
    assert f"embedding cache file {npy} is unusable" in caplog.text
    np.testing.assert_allclose(m, reference, atol=1e-6)
    _, again, c2 = run(encoder, tmp_path)  # repaired
    assert again.cache_hit and c2.n_texts == 0


def test_killed_encoding_resumes_from_chunks(encoder, reference, tmp_path, caplog):
    killed = CountingEncoder(encoder, fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        run(killed, tmp_path, chunk_size=4)
    npy, js, partial = _paths(encoder, tmp_path, chunk_size=4)
    assert not os.path.exists(npy) and not os.path.exists(js)
    assert sorted(os.listdir(partial)) == [
        "chunk-000000.json",
        "chunk-000000.npy",
        "chunk-000001.json",
        "chunk-000001.npy",
    ]
    # damage chunk 1: it must be re-encoded, chunk 0 reused
    with open(os.path.join(partial, "chunk-000001.npy"), "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING):
        m, info, c = run(encoder, tmp_path, chunk_size=4)
    assert "chunk-000001.npy is unusable" in caplog.text
    assert info.n_chunks_resumed == 1 and info.n_encoded == 6 and c.n_texts == 6
    np.testing.assert_allclose(m, reference, atol=1e-5)
    assert not os.path.exists(partial) and os.path.isfile(js)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    explicit = tmp_path / "cache" / "emb"
    assert resolve_cache_dir({"embedding_cache_dir": str(explicit), "data_path": str(tmp_path)}) == str(explicit)
    data = tmp_path / "data"
    data.mkdir()
    assert resolve_cache_dir({"data_path": str(data)}) == str(data)
    data.chmod(0o555)  # read-only dataset dir (honoured even when running as root)
    try:
        assert resolve_cache_dir({"data_path": str(data)}) == str(tmp_path / "saved" / "embedding_cache")
        assert os.path.isdir(tmp_path / "saved" / "embedding_cache")
        with pytest.raises(ConfigError, match="embedding_cache_dir"):
            resolve_cache_dir({"embedding_cache_dir": str(data)})
    finally:
        data.chmod(0o755)


# ----------------------------------------------------------------------------- bring your own
def write_atomic(path, rows, header="iid:token\temb:float_seq"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_precomputed_npy_with_tokens(tmp_path):
    mat = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float64)
    np.save(tmp_path / "e.npy", mat)
    (tmp_path / "e.tokens.txt").write_text("a\nb\nc\nd\n")
    tokens, m = load_precomputed_embeddings(tmp_path / "e.npy", known_tokens={"a", "b", "c", "d", "z"})
    assert tokens == ["a", "b", "c", "d"] and m.dtype == np.float32
    np.testing.assert_allclose(m, mat, atol=1e-6)
    (tmp_path / "other.txt").write_text("d\nc\nb\na\n")
    assert load_precomputed_embeddings(tmp_path / "e.npy", tokens_path=tmp_path / "other.txt")[0][0] == "d"
    (tmp_path / "e.tokens.txt").write_text("a\nb\nc\n")
    with pytest.raises(EmbeddingFileError, match=r"e\.npy.*4 rows.*3 tokens"):
        load_precomputed_embeddings(tmp_path / "e.npy")
    np.save(tmp_path / "f.npy", mat)
    with pytest.raises(FileNotFoundError, match=r"f\.tokens\.txt"):
        load_precomputed_embeddings(tmp_path / "f.npy")
    with pytest.raises(FileNotFoundError, match="precomputed_embeddings"):
        load_precomputed_embeddings(tmp_path / "nope.npy")


def test_precomputed_atomic_file(tmp_path):
    path = write_atomic(tmp_path / "e.emb", ["a\t0.5 1 -2", "b\t1e-3 2 3", "c\t0 0 1"])
    tokens, m = load_precomputed_embeddings(path)
    assert tokens == ["a", "b", "c"] and m.shape == (3, 3)
    np.testing.assert_allclose(m[1], [1e-3, 2, 3], rtol=1e-6)
    comma = write_atomic(tmp_path / "c.emb", ["a\t0.5,1", "b\t2,3"], header="item_id:token\tvec:float_seq")
    assert load_precomputed_embeddings(comma, seq_separator=",")[1].shape == (2, 2)


def test_precomputed_errors_are_specific(tmp_path):
    bad_dim = write_atomic(tmp_path / "d.emb", ["a\t1 2 3", "b\t1 2 3", "c\t1 2"])
    with pytest.raises(EmbeddingFileError, match=r"d\.emb.*line 4 \(token 'c'\) has 2 values, but line 2 has 3"):
        load_precomputed_embeddings(bad_dim)
    nan = write_atomic(tmp_path / "n.emb", ["a\t1 2", "b\tnan 2", "c\t1 inf"])
    with pytest.raises(EmbeddingFileError, match=r"n\.emb.*NaN/inf.*2 item.*'b', 'c'"):
        load_precomputed_embeddings(nan)
    dup = write_atomic(tmp_path / "u.emb", ["a\t1 2", "b\t1 2", "a\t3 4"])
    with pytest.raises(EmbeddingFileError, match=r"u\.emb.*1 item token.*more than once.*'a'"):
        load_precomputed_embeddings(dup)
    text = write_atomic(tmp_path / "t.emb", ["a\t1 x"])
    with pytest.raises(EmbeddingFileError, match=r"t\.emb.*line 2 \(token 'a'\).*non-number"):
        load_precomputed_embeddings(text)
    cols = write_atomic(tmp_path / "h.emb", ["a\t1"], header="iid:token\temb:float")
    with pytest.raises(EmbeddingFileError, match="float_seq"):
        load_precomputed_embeddings(cols)
    ok = write_atomic(tmp_path / "k.emb", ["a\t1 2", "b\t1 2", "x1\t1 2", "x2\t1 2"])
    with pytest.raises(EmbeddingFileError, match=r"k\.emb.*2 item token\(s\) the dataset does not know.*'x1', 'x2'"):
        load_precomputed_embeddings(ok, known_tokens={"a", "b"})
    tokens, m = load_precomputed_embeddings(ok, known_tokens={"a", "b"}, unknown_tokens="drop")
    assert tokens == ["a", "b"] and m.shape == (2, 2)
    nan_npy = np.ones((2, 2))
    nan_npy[1, 0] = np.nan
    np.save(tmp_path / "x.npy", nan_npy)
    (tmp_path / "x.tokens.txt").write_text("p\nq\n")
    with pytest.raises(TFLLMERError, match=r"x\.npy.*'q'"):
        load_precomputed_embeddings(tmp_path / "x.npy")


def test_encoding_logs_progress_over_the_whole_catalogue(encoder, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run(encoder, tmp_path, chunk_size=4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding ")]
    assert [ln.split(": ")[1].split(" items")[0] for ln in lines] == ["4/10", "8/10", "10/10"]
    assert all("s left" in ln for ln in lines) and "(100%)" in lines[-1]


def test_shards_split_the_chunks_and_a_plain_run_commits_them_without_a_model(encoder, tmp_path):
    (tmp_path / "single").mkdir()
    (tmp_path / "sharded").mkdir()
    single, _, _ = run(encoder, tmp_path / "single", chunk_size=3)  # 4 chunks: 3 + 3 + 3 + 1 items
    counts = []
    for index in (1, 0):  # any order: each worker writes only its own chunks
        result, info, counting = run(encoder, tmp_path / "sharded", chunk_size=3, shard=(index, 2))
        assert result is None and not info.cache_hit
        counts.append(counting.n_texts)
    assert counts == [3 + 1, 3 + 3]  # shard 1: chunks 1, 3; shard 0: chunks 0, 2
    npy, js, partial = _paths(encoder, tmp_path / "sharded", chunk_size=3)
    assert not os.path.exists(js) and len(glob.glob(os.path.join(partial, "chunk-*.npy"))) == 4  # nothing committed
    again, info, counting = run(encoder, tmp_path / "sharded", chunk_size=3, shard="0/2")
    assert again is None and counting.n_texts == 0 and info.n_chunks_resumed == 2  # a rerun shard resumes

    fresh = SentenceTransformerEncoder(bundled_model_dir(), device="cpu")
    matrix, info, counting = run(fresh, tmp_path / "sharded", chunk_size=3)
    assert info.n_encoded == 0 and info.n_chunks_resumed == 4 and not fresh.loaded  # committed, no model loaded
    np.testing.assert_array_equal(matrix, single)  # the file one worker alone would have written
    assert os.path.isfile(js) and not os.path.exists(partial)


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", (0, 0), (-1, 3)])
def test_a_bad_shard_is_refused(encoder, tmp_path, shard):
    with pytest.raises(ValueError, match="shard must be I/N with 0 <= I < N"):
        run(encoder, tmp_path, shard=shard)


def test_a_cache_dir_that_does_not_exist_yet_is_created(encoder, reference, tmp_path):
    """encode_with_cache called directly (not through the hook, which resolves the folder first)."""
    matrix, info, _ = run(encoder, tmp_path / "new" / "cache")
    np.testing.assert_allclose(matrix, reference, atol=1e-6)
    assert os.path.dirname(info.cache_file) == str(tmp_path / "new" / "cache")
