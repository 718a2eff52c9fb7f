"""The data hook on a real RecBole dataset: a 40-user slice of ml-100k, filtered so that
RecBole drops and remaps items; every row must still be the right item's text vector."""

import csv
import logging
import os
import shutil

import numpy as np
import pytest
import recbole
from recbole.config import Config
from recbole.data import create_dataset

from recbole_tfllmer.errors import ConfigError, EmbeddingFileError, ItemTextError
from recbole_tfllmer.text.hook import compute_item_embeddings, compute_item_embeddings_with_info, dataset_item_tokens

ML100K = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")
NAME = "ml_slice"


class CountingEncoder:
    """Wraps a real encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.n_texts = inner, 0

    identity = property(lambda self: self.inner.identity)
    loaded = property(lambda self: self.inner.loaded)
    dimension = property(lambda self: self.inner.dimension)

    def load(self):
        self.inner.load()
        return self

    def encode(self, texts):
        self.n_texts += len(texts)
        return self.inner.encode(texts)


def raw_item_rows(path):
    """token -> raw row, parsed with the csv module (independently of the code under test)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.split(":")[0] for h in next(reader)]
        return {row[0]: dict(zip(header, row)) for row in reader}


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    d = root / NAME
    d.mkdir()
    with open(os.path.join(ML100K, "ml-100k.inter"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[0]) <= 40]
    (d / f"{NAME}.inter").write_text("\n".join(kept) + "\n", encoding="utf-8")
    shutil.copy(os.path.join(ML100K, "ml-100k.item"), d / f"{NAME}.item")
    return root


@pytest.fixture(scope="module")
def recbole_config(slice_dir, tmp_path_factory):
    return Config(
        model="SASRec",
        dataset=NAME,
        config_dict={
            "data_path": str(slice_dir),
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"],
                "item": ["item_id", "movie_title", "release_year", "class"],
            },
            "user_inter_num_interval": "[10,inf)",
            "item_inter_num_interval": "[8,inf)",
            "train_neg_sample_args": None,
            "use_gpu": False,
            "show_progress": False,
            "checkpoint_dir": str(tmp_path_factory.mktemp("saved")),
            "embedding_cache_dir": str(tmp_path_factory.mktemp("cache")),
        },
    )


@pytest.fixture(scope="module")
def dataset(recbole_config):
    return create_dataset(recbole_config)


def hook_config(recbole_config, **overrides):
    cfg = dict(recbole_config.final_config_dict)
    cfg.update(overrides)
    return cfg


def test_rows_follow_recbole_ids_after_filtering(recbole_config, dataset, encoder, slice_dir):
    raw = raw_item_rows(slice_dir / NAME / f"{NAME}.item")
    n_slice_items = len({ln.split("\t")[1] for ln in (slice_dir / NAME / f"{NAME}.inter").read_text().splitlines()[1:]})
    assert dataset.item_num - 1 < n_slice_items  # the filters really dropped items

    counting = CountingEncoder(encoder)
    result = compute_item_embeddings_with_info(recbole_config, dataset, encoder=counting)
    m = result.matrix
    assert m.shape == (dataset.item_num, 384) and m.dtype == np.float32
    assert not m[0].any() and result.tokens[0] == "[PAD]"
    assert counting.n_texts == dataset.item_num - 1 and not result.missing_tokens

    ids = [1, 2, dataset.item_num // 2, dataset.item_num - 1]
    for i in ids:
        token = dataset.id2token(dataset.iid_field, i)
        r = raw[token]
        text = f"movie_title: {r['movie_title']}. release_year: {r['release_year']}. class: {r['class']}"
        assert result.texts[i] == text
        np.testing.assert_allclose(m[i], encoder.encode([text])[0], atol=1e-5, rtol=0)

    # the second call is a cache hit: zero texts reach the encoder
    again = CountingEncoder(encoder)
    result2 = compute_item_embeddings_with_info(recbole_config, dataset, encoder=again)
    assert result2.encode_info.cache_hit and result2.encode_info.n_encoded == 0 and again.n_texts == 0
    assert result2.info["cache_hit"] is True and result2.info["n_encoded"] == 0 and result2.info["dim"] == 384
    np.testing.assert_array_equal(result2.matrix, m)
    assert np.array_equal(compute_item_embeddings(recbole_config, dataset, encoder=again), m)


def test_raw_text_matches_recbole_parse(recbole_config, dataset, encoder):
    """Our raw strings are RecBole's token_seq values, unsplit."""
    result = compute_item_embeddings_with_info(recbole_config, dataset, encoder=encoder)
    feat = dataset.item_feat  # a DataFrame here, one row per internal item id
    titles = dict(zip(np.asarray(feat[dataset.iid_field]).tolist(), feat["movie_title"]))
    for i in range(1, dataset.item_num):
        words = [w for w in dataset.id2token("movie_title", np.asarray(titles[i])) if w != "[PAD]"]
        assert result.texts[i].startswith(f"movie_title: {' '.join(words)}. release_year:")


def test_template_and_fields_from_config(recbole_config, dataset, encoder):
    cfg = hook_config(recbole_config, text_template="{movie_title} ({release_year})", text_fields=None)
    result = compute_item_embeddings_with_info(cfg, dataset, encoder=encoder)
    assert result.texts[1].endswith(")") and "class" not in result.texts[1]
    cfg = hook_config(recbole_config, text_fields=["movie_title"])
    assert compute_item_embeddings_with_info(cfg, dataset, encoder=encoder).texts[1].startswith("movie_title: ")
    with pytest.raises(ConfigError, match="text_template.*'genre'"):
        compute_item_embeddings(hook_config(recbole_config, text_template="{genre}"), dataset, encoder=encoder)
    with pytest.raises(ConfigError, match="missing_text_policy"):
        compute_item_embeddings(hook_config(recbole_config, missing_text_policy="skip"), dataset, encoder=encoder)


@pytest.fixture(scope="module")
def holey_dir(tmp_path_factory, slice_dir, dataset):
    """The same dataset with an .item file lacking 3 of its items and one item with no text."""
    d = tmp_path_factory.mktemp("holey") / NAME
    d.mkdir()
    tokens = dataset_item_tokens(dataset)
    drop, blank = set(tokens[1:4]), tokens[4]
    lines = (slice_dir / NAME / f"{NAME}.item").read_text(encoding="utf-8").splitlines()
    out = [lines[0]]
    for ln in lines[1:]:
        tok = ln.split("\t")[0]
        if tok in drop:
            continue
        out.append(f"{tok}\t\t\t" if tok == blank else ln)
    (d / f"{NAME}.item").write_text("\n".join(out) + "\n", encoding="utf-8")
    return str(d), tokens[1:5]


def test_missing_text_policies(recbole_config, dataset, encoder, holey_dir, caplog):
    path, missing = holey_dir
    cfg = hook_config(recbole_config, data_path=path)
    with pytest.raises(ItemTextError, match=r"4 item\(s\) of the dataset have no text.*missing_text_policy") as e:
        compute_item_embeddings(cfg, dataset, encoder=encoder)
    assert repr(missing[0]) in str(e.value)

    with caplog.at_level(logging.WARNING):
        zero = compute_item_embeddings_with_info({**cfg, "missing_text_policy": "zero"}, dataset, encoder=encoder)
    assert "4 item(s) have no text" in caplog.text and "zeros" in caplog.text
    assert zero.missing_tokens == missing
    assert not zero.matrix[1:5].any() and np.abs(zero.matrix[5:]).sum(axis=1).min() > 0

    mean = compute_item_embeddings({**cfg, "missing_text_policy": "mean"}, dataset, encoder=encoder)
    np.testing.assert_allclose(mean[1], zero.matrix[5:].mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(mean[5:], zero.matrix[5:])


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory, slice_dir):
    """Vectors for *every* item of the raw slice, also those RecBole filters out."""
    d = tmp_path_factory.mktemp("byo")
    inter = (slice_dir / NAME / f"{NAME}.inter").read_text().splitlines()[1:]
    tokens = sorted({ln.split("\t")[1] for ln in inter}, key=int)
    vectors = np.random.default_rng(1).normal(size=(len(tokens), 16)).astype(np.float32)
    np.save(d / "vec.npy", vectors)
    (d / "vec.tokens.txt").write_text("\n".join(tokens) + "\n")
    return d, tokens, vectors


def test_precomputed_embeddings_align(recbole_config, dataset, precomputed):
    d, tokens, vectors = precomputed
    result = compute_item_embeddings_with_info(
        hook_config(recbole_config, precomputed_embeddings=str(d / "vec.npy")), dataset
    )
    row = {t: k for k, t in enumerate(tokens)}
    assert result.matrix.shape == (dataset.item_num, 16) and not result.matrix[0].any()
    for i in range(1, dataset.item_num):
        np.testing.assert_array_equal(result.matrix[i], vectors[row[dataset.id2token(dataset.iid_field, i)]])
    # a bare file name is looked up next to the dataset's atomic files
    shutil.copy(d / "vec.npy", os.path.join(recbole_config["data_path"], "byo.npy"))
    shutil.copy(d / "vec.tokens.txt", os.path.join(recbole_config["data_path"], "byo.tokens.txt"))
    beside = compute_item_embeddings(hook_config(recbole_config, precomputed_embeddings="byo.npy"), dataset)
    np.testing.assert_array_equal(beside, result.matrix)


def test_precomputed_unknown_and_missing(recbole_config, dataset, precomputed, tmp_path):
    d, tokens, vectors = precomputed
    ds_tokens = dataset_item_tokens(dataset)[1:]
    # a vector for an item no dataset file mentions -> error with count and examples
    np.save(tmp_path / "u.npy", np.vstack([vectors, np.ones((2, 16), np.float32)]))
    (tmp_path / "u.tokens.txt").write_text("\n".join(tokens + ["99999", "tt0114709"]) + "\n")
    with pytest.raises(EmbeddingFileError, match=r"u\.npy.*2 item token\(s\) the dataset does not know.*'99999'"):
        compute_item_embeddings(hook_config(recbole_config, precomputed_embeddings=str(tmp_path / "u.npy")), dataset)
    # dataset items without a vector -> missing_text_policy
    keep = [k for k, t in enumerate(tokens) if t not in ds_tokens[:2]]
    (tmp_path / "m.emb").write_text(
        "iid:token\temb:float_seq\n" + "".join(f"{tokens[k]}\t{' '.join(map(str, vectors[k]))}\n" for k in keep)
    )
    cfg = hook_config(recbole_config, precomputed_embeddings=str(tmp_path / "m.emb"))
    with pytest.raises(ItemTextError, match=r"2 item\(s\) of the dataset have no vector"):
        compute_item_embeddings(cfg, dataset)
    filled = compute_item_embeddings({**cfg, "missing_text_policy": "zero"}, dataset)
    assert not filled[1:3].any() and filled[3:].any(axis=1).all()


def test_byte_order_marks_and_leading_zero_ids(tmp_path, in_tmp):
    """Real exports: a BOM before the header of .inter and .item is read as RecBole users expect;
    ids written with leading zeros in one file only are named as the cause of missing text."""
    from recbole_tfllmer.data import create_dataset
    from recbole_tfllmer.errors import ItemTextError
    from recbole_tfllmer.quick_start import build_config
    from tests.conftest import slice_config, write_ml100k_slice

    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=40)
    for suffix in ("inter", "item"):
        path = data_path / name / f"{name}.{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    config = build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path, item_init="pca"))
    dataset = create_dataset(config)
    assert dataset.inter_num > 0 and dataset.item_text_embeddings.shape[0] == dataset.item_num

    item_file = data_path / name / f"{name}.item"
    header, first, *rest = item_file.read_text(encoding="utf-8-sig").splitlines()
    item_file.write_text("\n".join([header, "00" + first, *rest]) + "\n", encoding="utf-8")
    with pytest.raises(ItemTextError) as err:
        create_dataset(build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path / "b")))
    token = first.split("\t")[0]
    assert f"match an .item id up to leading zeros (e.g. {token!r} in the .inter file, {'00' + token!r}" in str(
        err.value
    )


def test_encode_items_shards_then_a_training_run_reads_the_committed_cache(tmp_path, in_tmp, capsys):
    """`recbole-tfllmer encode-items --shard I/N` on two workers, then a plain `encode-items` commits
    without encoding, and the dataset a training run builds gets a cache hit with the same vectors."""
    import yaml

    from recbole_tfllmer.cli import main
    from recbole_tfllmer.data.dataset import create_dataset as plugin_create_dataset
    from recbole_tfllmer.quick_start import build_config
    from tests.conftest import slice_config, write_ml100k_slice

    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=20)
    settings = slice_config(data_path, name, tmp_path, item_init="pca", embedding_chunk_size=50)
    settings["embedding_cache_dir"] = str(tmp_path / "cache")
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    argv = ["encode-items", "--config_files", str(config_file)]
    for shard in ("1/2", "0/2"):
        assert main([*argv, "--shard", shard]) == 0
        assert f"shard {shard} encoded" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 items encoded, cache hit False" in capsys.readouterr().out  # committed the shards' chunks
    dataset = plugin_create_dataset(build_config("TFLLMER", name, config_dict=settings))
    assert dataset.embedding_info["cache_hit"] and dataset.embedding_info["n_encoded"] == 0
    assert main([*argv, "--shard", "3/2"]) == 2
    assert "--shard: shard must be I/N with 0 <= I < N" in capsys.readouterr().err


def test_encode_items_on_devices_runs_one_shard_per_device_and_commits_the_same_file(tmp_path, in_tmp, capsys):
    """`encode-items --devices cpu,cpu`: two shard workers in parallel, then the commit; the cache
    file is byte for byte the one a single plain `encode-items` writes."""
    import yaml

    from recbole_tfllmer.cli import main
    from tests.conftest import slice_config, write_ml100k_slice

    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=20)
    files = {}
    for how, extra in (("single", []), ("devices", ["--devices", "cpu,cpu"])):
        settings = slice_config(data_path, name, tmp_path, item_init="pca", embedding_chunk_size=50)
        settings["embedding_cache_dir"] = str(tmp_path / f"cache-{how}")
        config_file = tmp_path / f"{how}.yaml"
        config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
        assert main(["encode-items", "--config_files", str(config_file), *extra]) == 0
        out = capsys.readouterr().out
        files[how] = out.strip().splitlines()[-1].split(": ")[0]
        if how == "devices":
            assert "2 shards encoded on cpu, cpu; committing" in out
            assert "0 items encoded, cache hit False" in out  # the workers encoded everything
        else:
            assert "0 items encoded" not in out
    single, sharded = (open(files[k], "rb").read() for k in ("single", "devices"))
    assert os.path.basename(files["single"]) == os.path.basename(files["devices"]) and single == sharded
    assert (
        main(["encode-items", "--config_files", str(tmp_path / "devices.yaml"), "--devices", "cpu", "--shard", "0/2"])
        == 2
    )
    assert "--devices runs its own shards (one per device): drop --shard" in capsys.readouterr().err
