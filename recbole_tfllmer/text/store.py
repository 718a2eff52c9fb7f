"""Content-hashed, crash-safe cache of item text embeddings, and bring-your-own import.

A cache file is named by a hash of everything that determines its rows (encoder identity,
template, fields, and the ordered (item token, text) list), so a changed text or model
can never be served stale vectors: it simply has another name. Files are committed by
atomic rename, the `.npy` first and its `.json` sidecar last; the sidecar (with the
sha256 of the `.npy` bytes) is the commit marker, and a `.npy` without a valid sidecar is
never read. Long encodings are written in checksummed chunks under `<name>.partial/` and
resumed after a crash.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from recbole_tfllmer.atomic import atomic_write
from recbole_tfllmer.errors import ConfigError, DiskFullError, EmbeddingFileError, EmbeddingFileNotFoundError
from recbole_tfllmer.options import default_of

CACHE_FORMAT = 1
DEFAULT_CHUNK_SIZE = default_of("embedding_chunk_size")
_STALE_TEMP_SECONDS = 3600


@dataclass
class EncodeInfo:
    """What one `encode_with_cache` call did (returned beside the matrix, and logged)."""

    cache_file: str
    cache_hit: bool
    n_items: int
    n_encoded: int
    n_chunks_resumed: int = 0
    load_seconds: float = 0.0
    encode_seconds: float = 0.0
    total_seconds: float = 0.0
    key: str = ""


# --------------------------------------------------------------------------- keys
def items_digest(tokens, texts):
    """sha256 of the ordered (token, text) list; length-prefixed so no two lists collide."""
    h = hashlib.sha256()
    for tok, text in zip(tokens, texts, strict=True):
        for s in (str(tok), str(text)):
            b = s.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def compute_cache_key(identity, template, fields, tokens, texts, chunk_size=DEFAULT_CHUNK_SIZE):
    """(key, components): the full sha256 key and its inputs in readable form.

    The chunk size is part of the key: encoding in other batches of items gives vectors that
    differ in the last bits, and which run wrote first must not decide the cached bits."""
    components = {
        "format": CACHE_FORMAT,
        "encoder": dict(identity),
        "template": template,
        "fields": list(fields) if fields is not None else None,
        "n_items": len(tokens),
        "items_sha256": items_digest(tokens, texts),
        "chunk_size": int(chunk_size),
    }
    blob = json.dumps(components, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest(), components


# --------------------------------------------------------------------------- cache dir
def _dir_is_writable(path):
    """True when we may create files in `path`. Permission bits that grant nobody write
    access count as read-only even for root: a read-only dataset dir is meant to stay so."""
    if not path or not os.path.isdir(path):
        return False
    if not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".tfllmer-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def resolve_cache_dir(config):
    """`embedding_cache_dir` if set; else the dataset's directory if writable; else
    ./saved/embedding_cache. Logs the choice."""
    from recbole_tfllmer.text.encoders import config_value

    explicit = config_value(config, "embedding_cache_dir")
    if explicit:
        path = os.path.abspath(os.path.expanduser(str(explicit)))
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"`embedding_cache_dir` {path!r} cannot be created ({e}). Choose a writable directory."
            ) from None
        if not _dir_is_writable(path):
            raise ConfigError(f"`embedding_cache_dir` {path!r} is not writable. Choose a writable directory.")
        reason = "embedding_cache_dir"
    else:
        data_path = config_value(config, "data_path")
        if data_path and _dir_is_writable(os.path.abspath(str(data_path))):
            path, reason = os.path.abspath(str(data_path)), "dataset directory"
        else:
            path, reason = os.path.abspath(os.path.join("saved", "embedding_cache")), "dataset directory not writable"
            os.makedirs(path, exist_ok=True)
    logging.getLogger().info(f"embedding cache dir: {path} ({reason})")
    return path


# --------------------------------------------------------------------------- atomic io
def _atomic_write(path, write_fn):
    """Atomic write (see recbole_tfllmer.atomic); returns the sha256 of the bytes written."""
    return atomic_write(path, write_fn, hash_bytes=True)


def _save_npy_atomic(path, array):
    return _atomic_write(path, lambda w: np.save(w, np.ascontiguousarray(array), allow_pickle=False))


def _save_json_atomic(path, obj):
    data = json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")
    return _atomic_write(path, lambda w: w.write(data))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove_stale_temps(directory, prefix):
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(f".{prefix}") and name.endswith(".tmp"):
            full = os.path.join(directory, name)
            try:
                if now - os.path.getmtime(full) > _STALE_TEMP_SECONDS:
                    os.unlink(full)
            except OSError:
                pass


def _now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- cache
def cache_paths(cache_dir, dataset_name, key):
    """(npy, json, partial dir) for a key."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset_name)) or "dataset"
    stem = os.path.join(cache_dir, f"{safe}-{key[:16]}")
    return stem + ".emb.npy", stem + ".emb.json", stem + ".emb.partial"


def _load_verified(npy_path, meta, shape):
    """The array if the bytes match the recorded checksum and the shape; else a reason."""
    if not os.path.isfile(npy_path):
        return None, "its .npy file is missing"
    if file_sha256(npy_path) != meta.get("npy_sha256"):
        return None, "the .npy checksum does not match its metadata (corrupted or partly written)"
    try:
        arr = np.load(npy_path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a cache miss
        return None, f"the .npy cannot be read ({e})"
    if arr.dtype != np.float32 or arr.shape != shape:
        return None, f"the array is {arr.dtype} {arr.shape}, expected float32 {shape}"
    return arr, None


def load_cached_embeddings(cache_dir, dataset_name, key, tokens):
    """The cached matrix for `key`, or None. Unusable files are reported with a warning and
    ignored (never used); the caller recomputes and overwrites them."""
    npy_path, json_path, _ = cache_paths(cache_dir, dataset_name, key)
    if not os.path.isfile(json_path):
        if os.path.isfile(npy_path):
            logging.getLogger().warning(
                f"embedding cache file {npy_path} has no metadata sidecar {os.path.basename(json_path)} "
                f"(an interrupted write?); ignoring it and recomputing."
            )
        return None
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        logging.getLogger().warning(f"embedding cache metadata {json_path} is unreadable ({e}); recomputing.")
        return None
    reason = None
    if not isinstance(meta, dict) or meta.get("key") != key:
        reason = "its key does not match"
    elif meta.get("tokens") != list(tokens):
        reason = "its item tokens do not match"
    elif not isinstance(meta.get("dim"), int):
        reason = "its metadata has no dimension"
    if reason is None:
        arr, reason = _load_verified(npy_path, meta, (len(tokens), meta["dim"]))
        if arr is not None:
            return arr
    logging.getLogger().warning(f"embedding cache file {npy_path} is unusable: {reason}; recomputing it.")
    return None


def _chunk_paths(partial_dir, index):
    stem = os.path.join(partial_dir, f"chunk-{index:06d}")
    return stem + ".npy", stem + ".json"


def _load_chunk(partial_dir, index, key, start, stop):
    npy_path, json_path = _chunk_paths(partial_dir, index)
    if not os.path.isfile(json_path):
        return None
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = None
    if (
        not isinstance(meta, dict)
        or (meta.get("key"), meta.get("start"), meta.get("stop")) != (key, start, stop)
        or not isinstance(meta.get("dim"), int)
    ):
        logging.getLogger().warning(f"embedding cache chunk {json_path} does not belong to this run; re-encoding it.")
        return None
    arr, reason = _load_verified(npy_path, meta, (stop - start, meta["dim"]))
    if arr is None:
        logging.getLogger().warning(f"embedding cache chunk {npy_path} is unusable: {reason}; re-encoding it.")
    return arr


def encode_with_cache(
    encoder,
    tokens,
    texts,
    cache_dir,
    dataset_name,
    template=None,
    fields=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    shard=None,
):
    """(matrix float32 (n, D) in `tokens` order, EncodeInfo), encoding only on a cache miss.

    `encoder` needs `.identity` and `.encode(list[str])`; its `.load()` (if any) is called
    only when a chunk really has to be encoded, so a hit (or a commit of chunks that other
    workers encoded) costs a checksum, not a model load.

    `shard=(index, count)`: encode only the chunks whose number is `index` mod `count` into the
    partial dir and return `(None, info)` without committing. Workers on several processes or
    machines (a shared cache dir) each take one shard; any later call without `shard` then
    finds every chunk, encodes nothing and commits the same file a single run would write.
    """
    t_start = time.perf_counter()
    tokens, texts = [str(t) for t in tokens], list(texts)
    if len(tokens) != len(texts):
        raise ValueError(f"{len(tokens)} tokens but {len(texts)} texts")
    shard = check_shard(shard)
    os.makedirs(cache_dir, exist_ok=True)  # the lock file lives there (the hook has made it; a direct caller may not)
    key, components = compute_cache_key(encoder.identity, template, fields, tokens, texts, chunk_size)
    npy_path, json_path, partial_dir = cache_paths(cache_dir, dataset_name, key)

    cached = _cache_hit(cache_dir, dataset_name, key, tokens, partial_dir, npy_path, t_start)
    if cached is not None:
        return cached
    if shard is not None:  # no lock: shards write disjoint chunks, each atomically
        return None, _encode_chunks(encoder, tokens, texts, partial_dir, key, chunk_size, npy_path, t_start, shard)[1]
    with _cache_lock(npy_path):  # parallel jobs on one key: the first encodes, the others then hit
        cached = _cache_hit(cache_dir, dataset_name, key, tokens, partial_dir, npy_path, t_start)
        if cached is not None:
            return cached
        paths = (npy_path, json_path, partial_dir)
        return _encode_and_commit(encoder, tokens, texts, cache_dir, paths, key, components, chunk_size, t_start)


def _cache_hit(cache_dir, dataset_name, key, tokens, partial_dir, npy_path, t_start):
    """(matrix, EncodeInfo) of a committed cache file, or None."""
    cached = load_cached_embeddings(cache_dir, dataset_name, key, tokens)
    if cached is None:
        return None
    if os.path.isdir(partial_dir):  # crash between commit and cleanup
        shutil.rmtree(partial_dir, ignore_errors=True)
    info = EncodeInfo(npy_path, True, len(tokens), 0, key=key, total_seconds=time.perf_counter() - t_start)
    logging.getLogger().info(f"embedding cache hit: {npy_path} (0 items encoded, {info.total_seconds:.2f} s)")
    return cached, info


@contextlib.contextmanager
def _cache_lock(npy_path):
    """An exclusive flock on a hidden file beside the cache: released when the holder ends,
    also when it is killed, so a crashed job never blocks the next one."""
    lock_path = os.path.join(os.path.dirname(npy_path), f".{os.path.basename(npy_path)}.lock")
    with open(lock_path, "a+b") as lock:
        started = time.perf_counter()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger().info(f"another job is encoding {npy_path}: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
            logging.getLogger().info(f"waited {time.perf_counter() - started:.1f} s for {npy_path}")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _log_progress(done, total, resumed, encode_seconds, npy_path):
    """One line per chunk over the whole encoding (resumed chunks counted), with an estimate."""
    encoded = max(done - resumed, 1)
    remaining = (total - done) * encode_seconds / encoded
    logging.getLogger().info(
        f"encoding {os.path.basename(npy_path)}: {done}/{total} items ({100 * done / max(total, 1):.0f}%), "
        f"{encode_seconds:.0f} s so far, about {remaining:.0f} s left"
    )


def check_shard(shard):
    """(index, count) with 0 <= index < count, from a tuple or an "i/N" string; None stays None."""
    if shard is None:
        return None
    try:
        index, count = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"shard must be I/N with 0 <= I < N (e.g. 0/4), got {shard!r}")
    return index, count


def _encode_chunks(encoder, tokens, texts, partial_dir, key, chunk_size, npy_path, t_start, shard=None):
    """Encode every chunk that is not already in `partial_dir` (only `shard`'s, if given).

    Returns (chunks, EncodeInfo): the arrays in order (None for chunks of other shards). The
    encoder is loaded on the first chunk that needs it, so resuming or committing chunks
    written elsewhere never loads a model."""
    os.makedirs(partial_dir, exist_ok=True)
    load_seconds = 0.0
    chunks, n_encoded, n_resumed, resumed_items, encode_seconds = [], 0, 0, 0, 0.0
    n = len(tokens)
    chunk_size = max(1, int(chunk_size))
    for index, start in enumerate(range(0, max(n, 1), chunk_size)):
        if shard is not None and index % shard[1] != shard[0]:
            chunks.append(None)
            continue
        stop = min(n, start + chunk_size)
        arr = _load_chunk(partial_dir, index, key, start, stop)
        if arr is not None:
            n_resumed += 1
            resumed_items += len(arr)
        else:
            if hasattr(encoder, "load") and not getattr(encoder, "loaded", False):
                t0 = time.perf_counter()
                encoder.load()
                load_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            arr = np.ascontiguousarray(np.asarray(encoder.encode(texts[start:stop]), dtype=np.float32))
            encode_seconds += time.perf_counter() - t0
            if arr.ndim != 2 or arr.shape[0] != stop - start:
                raise ValueError(f"encoder returned shape {arr.shape} for {stop - start} texts")
            n_encoded += stop - start
            c_npy, c_json = _chunk_paths(partial_dir, index)
            os.makedirs(partial_dir, exist_ok=True)  # a concurrent run may have committed and cleaned up
            sha = _save_npy_atomic(c_npy, arr)
            _save_json_atomic(
                c_json,
                {
                    "key": key,
                    "index": index,
                    "start": start,
                    "stop": stop,
                    "dim": int(arr.shape[1]),
                    "npy_sha256": sha,
                    "created_at": _now_iso(),
                },
            )
            _log_progress(stop, n, resumed_items, encode_seconds, npy_path)
        chunks.append(arr)
    info = EncodeInfo(
        npy_path, False, n, n_encoded, n_resumed, load_seconds, encode_seconds, time.perf_counter() - t_start, key
    )
    if shard is not None:
        logging.getLogger().info(
            f"shard {shard[0]}/{shard[1]} of {os.path.basename(npy_path)}: encoded {n_encoded} items in "
            f"{encode_seconds:.1f} s, {n_resumed} chunk(s) already there; not committed (a run without a shard commits)"
        )
    return chunks, info


def _encode_and_commit(encoder, tokens, texts, cache_dir, paths, key, components, chunk_size, t_start):
    """Encode (resuming committed chunks), then commit the cache file and its sidecar."""
    npy_path, json_path, partial_dir = paths
    n = len(tokens)
    try:
        chunks, info = _encode_chunks(encoder, tokens, texts, partial_dir, key, chunk_size, npy_path, t_start)
        dims = {c.shape[1] for c in chunks}
        if len(dims) != 1:
            shutil.rmtree(partial_dir, ignore_errors=True)
            raise ValueError(
                f"chunks in {partial_dir} have different dimensions {sorted(dims)}; they were removed, run again"
            )
        matrix = np.concatenate(chunks, axis=0) if n else chunks[0][:0]

        sha = _save_npy_atomic(npy_path, matrix)
        meta = {
            "format": CACHE_FORMAT,
            "model": components["encoder"].get("model"),
            "dim": int(matrix.shape[1]),
            "n_items": n,
            "row_order": "row i is the embedding of tokens[i]",
            "tokens": tokens,
            "created_at": _now_iso(),
            "key": key,
            "components": components,
            "npy_file": os.path.basename(npy_path),
            "npy_sha256": sha,
            "encode_seconds": round(info.encode_seconds, 3),
        }
        _save_json_atomic(json_path, meta)  # the commit marker: written last
    except DiskFullError as err:
        # committed chunks would keep the disk full and every re-run would fail the same way
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise DiskFullError(
            f"{err} The partial encoding {partial_dir} was removed so it does not keep the disk full; "
            "or set `embedding_cache_dir` to a disk with room."
        ) from None
    shutil.rmtree(partial_dir, ignore_errors=True)
    _remove_stale_temps(cache_dir, os.path.basename(npy_path)[: -len(".npy")])

    info.total_seconds = time.perf_counter() - t_start
    resumed = f", {info.n_chunks_resumed} chunk(s) resumed from {partial_dir}" if info.n_chunks_resumed else ""
    logging.getLogger().info(
        f"encoded {info.n_encoded} items in {info.encode_seconds:.1f} s (model load {info.load_seconds:.1f} s"
        f"{resumed}); cached to {npy_path}"
    )
    return matrix, info


# --------------------------------------------------------------------------- bring your own
def load_precomputed_embeddings(
    path,
    known_tokens=None,
    tokens_path=None,
    field_separator="\t",
    seq_separator=" ",
    encoding="utf-8",
    unknown_tokens="error",
):
    """(tokens, float32 matrix) from a user's embedding file, checked row by row.

    Formats: a `.npy` (n, D) with its tokens in `<stem>.tokens.txt` (one per line, row order;
    or `tokens_path`, or the `tokens` list of a `<stem>.json` cache sidecar); or an atomic
    file with one `<name>:token` and one `<name>:float_seq` column. `known_tokens`: every
    item token the dataset's files mention; tokens outside it raise (`unknown_tokens="error"`)
    or are dropped with a warning (`"drop"`).
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise EmbeddingFileNotFoundError(
            f"`precomputed_embeddings` file {path!r} does not exist. Point it to a .npy (+ .tokens.txt) or an "
            f"atomic `iid:token emb:float_seq` file."
        )
    if path.endswith(".npy"):
        tokens, matrix = _read_npy_with_tokens(path, tokens_path, encoding)
    else:
        tokens, matrix = _read_atomic_embeddings(path, field_separator, seq_separator, encoding)

    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise EmbeddingFileError(f"Embedding file {path!r} holds no vectors (shape {matrix.shape}).")
    dup = pd.Series(tokens)
    dup = dup[dup.duplicated()].unique().tolist()
    if dup:
        raise EmbeddingFileError(
            f"Embedding file {path!r} lists {len(dup)} item token(s) more than once, e.g. "
            f"{', '.join(repr(t) for t in dup[:5])}. Keep one vector per item."
        )
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        bad_tokens = [tokens[i] for i in np.flatnonzero(bad)]
        raise EmbeddingFileError(
            f"Embedding file {path!r} has NaN/inf values for {len(bad_tokens)} item(s), e.g. "
            f"{', '.join(repr(t) for t in bad_tokens[:5])}. Fix or drop these vectors."
        )
    if known_tokens is not None:
        known = set(map(str, known_tokens))
        unknown = [t for t in tokens if t not in known]
        if unknown:
            msg = (
                f"Embedding file {path!r} has {len(unknown)} item token(s) the dataset does not know, e.g. "
                f"{', '.join(repr(t) for t in unknown[:5])}."
            )
            if unknown_tokens == "error":
                raise EmbeddingFileError(
                    msg + " Are these the dataset's raw item tokens (not RecBole's internal ids), and is it the "
                    "right dataset?"
                )
            logging.getLogger().warning(msg + " Dropping them.")
            keep = np.array([t in known for t in tokens])
            tokens = [t for t, k in zip(tokens, keep) if k]
            matrix = matrix[keep]
    return tokens, np.ascontiguousarray(matrix, dtype=np.float32)


def _read_npy_with_tokens(path, tokens_path, encoding):
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise EmbeddingFileError(f"Embedding file {path!r} is not a readable .npy array ({e}).") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise EmbeddingFileError(
            f"Embedding file {path!r} must hold a 2-D numeric array (items x dim); got {arr.dtype} {arr.shape}."
        )
    stem = path[: -len(".npy")]
    candidates = [tokens_path] if tokens_path else [stem + ".tokens.txt"]
    tokens = None
    for cand in candidates:
        if cand and os.path.isfile(cand):
            tokens = _read_token_list(cand, encoding)
            source = cand
            break
    if tokens is None and not tokens_path and os.path.isfile(stem + ".json"):
        try:
            with open(stem + ".json", "r", encoding="utf-8") as f:
                tokens = [str(t) for t in json.load(f)["tokens"]]
            source = stem + ".json"
        except (OSError, ValueError, KeyError, TypeError):
            tokens = None
    if tokens is None:
        where = tokens_path or (stem + ".tokens.txt")
        raise EmbeddingFileNotFoundError(
            f"Embedding file {path!r} needs its item tokens in row order: {where!r} (one token per line) was not "
            f"found. Write that file, or use an atomic `iid:token emb:float_seq` file instead."
        )
    if len(tokens) != arr.shape[0]:
        raise EmbeddingFileError(
            f"Embedding file {path!r} has {arr.shape[0]} rows but its token list {source!r} has {len(tokens)} "
            f"tokens; they must match one to one, in row order."
        )
    return tokens, arr.astype(np.float32, copy=False)


def _read_token_list(path, encoding):
    with open(path, "r", encoding=encoding) as f:
        lines = [line.rstrip("\r\n").strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    for i, tok in enumerate(lines, start=1):
        if not tok:
            raise EmbeddingFileError(f"Token list {path!r}: line {i} is empty; every row needs an item token.")
    return lines


def _read_atomic_embeddings(path, field_separator, seq_separator, encoding):
    try:
        with open(path, "r", encoding=encoding, newline="") as f:
            head = f.readline().rstrip("\r\n").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise EmbeddingFileError(
            f"Embedding file {path!r} cannot be decoded as {encoding!r} ({e.reason}); " f"set `encoding`."
        ) from None
    cols = [c.partition(":") for c in head.split(field_separator)]
    token_cols = [i for i, (n, s, t) in enumerate(cols) if s and t == "token"]
    float_cols = [i for i, (n, s, t) in enumerate(cols) if s and t == "float_seq"]
    if len(token_cols) != 1 or len(float_cols) != 1:
        raise EmbeddingFileError(
            f"Embedding file {path!r} must have exactly one `<name>:token` and one `<name>:float_seq` column "
            f"(header: {head!r}), e.g. `iid:token{field_separator}emb:float_seq`, or be a .npy file."
        )
    try:
        df = pd.read_csv(
            path, delimiter=field_separator, dtype=str, keep_default_na=False, encoding=encoding, engine="python"
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise EmbeddingFileError(f"Embedding file {path!r} is garbled ({e}); check `field_separator`.") from None
    tok_values = df.iloc[:, token_cols[0]].tolist()
    vec_values = df.iloc[:, float_cols[0]].tolist()
    rows, dim, first_line = [], None, None
    for i, (tok, raw) in enumerate(zip(tok_values, vec_values)):
        line = i + 2
        if tok is None or raw is None:
            raise EmbeddingFileError(f"Embedding file {path!r}: line {line} has too few fields.")
        tok = str(tok).strip()
        if not tok:
            raise EmbeddingFileError(f"Embedding file {path!r}: line {line} has an empty item token.")
        try:
            vec = [float(x) for x in raw.split(seq_separator) if x.strip()]
        except ValueError as e:
            raise EmbeddingFileError(
                f"Embedding file {path!r}: line {line} (token {tok!r}) has a non-number ({e}); floats must be "
                f"separated by `seq_separator` ({seq_separator!r})."
            ) from None
        if dim is None:
            dim, first_line = len(vec), line
        elif len(vec) != dim:
            raise EmbeddingFileError(
                f"Embedding file {path!r}: line {line} (token {tok!r}) has {len(vec)} values, but line {first_line} "
                f"has {dim}; every vector must have the same dimension."
            )
        rows.append(vec)
        tok_values[i] = tok
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim or 0)
    return [str(t) for t in tok_values], matrix.astype(np.float32)
