"""LLMEmb stage 1: supervised contrastive fine-tuning (SCFT) of a text encoder (spec A.2, C.3).

`SCFTEncoder` follows the plugin's encoder protocol (`identity`, `dimension`, `encode`, `load`),
so `text/store.py::encode_with_cache` caches its vectors like any other encoder's. Its identity
names the base model, the whole recipe, the prompt format and the attribute lists, and is
computed without loading anything: a cache hit skips the training as well as the encoding.

On a miss it loads the base model (`AutoModel`, local files only unless downloads are allowed),
wraps it with LoRA (peft), trains it on pairs of attribute-drop views of every item that has
attributes, saves the adapter atomically (so a resumed, chunked encoding does not train again),
then encodes the full prompts with the fine-tuned model. Training runs on private torch RNG
state seeded by `SCFTRecipe.seed`: it is independent of the caller's seed and leaves the
caller's RNG where it was.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from recbole_tfllmer.atomic import atomic_write_text, is_out_of_space, out_of_space_error
from recbole_tfllmer.errors import CheckpointError, ConfigError
from recbole_tfllmer.llmemb.losses import LOSSES, contrastive_loss
from recbole_tfllmer.llmemb.prompts import (
    PromptFormat,
    ViewSampler,
    check_drop_ratio,
    python_rng_state,
    set_python_rng_state,
)
from recbole_tfllmer.options import BY_NAME, check_value
from recbole_tfllmer.text.encoders import (
    _resolve_device,
    _resolve_dtype,
    _torch_dtype,
    ensure_pad_token,
    model_display_name,
    model_fingerprint,
    pool_hidden_states,
    resolve_model_path,
)

PEFT_HINT = "install peft (pip install 'peft>=0.21,<0.22')"
ADAPTER_FORMAT = 1
ADAPTER_MANIFEST = "scft.json"
TAU_MIN = 1e-2


# --------------------------------------------------------------------------- recipe
def _require(ok, key, value, expectation):
    if not ok:
        raise ConfigError(f"`{key}` must be {expectation}, got {value!r}.")


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SCFTRecipe:
    """Everything that decides the fine-tuned weights; defaults are LLMEmb's Beauty run (spec C.3).

    `batch_size` is the contrastive group (the in-batch negatives), `grad_accum` the groups per
    optimizer step: 32 x 4 reproduces their 4-GPU step on one device. `epochs`, when set,
    replaces `max_steps` (CPU boards train one pass over the catalogue instead of 4000 steps).
    """

    drop_ratio: float = 0.4
    resample_views: bool = True
    loss: str = "soft_clip"
    tau_init: float = 3.0
    tau_learnable: bool = True
    lora_r: int = 8
    lora_alpha: float = 32
    lora_dropout: float = 0.1
    lora_targets: object = "all-linear"
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    batch_size: int = 32
    grad_accum: int = 4
    max_steps: int = 4000
    epochs: float = None
    max_length: int = 1024
    seed: int = 42

    def __post_init__(self):
        object.__setattr__(self, "lora_targets", _check_targets(self.lora_targets))
        check_drop_ratio(self.drop_ratio)
        _require(self.loss in LOSSES, "scft_loss", self.loss, f"one of {', '.join(LOSSES)}")
        _require(_is_number(self.tau_init) and self.tau_init > 0, "scft_tau_init", self.tau_init, "a number > 0")
        _require(_is_int(self.lora_r, 1), "scft_lora_r", self.lora_r, "an integer >= 1")
        _require(_is_number(self.lora_alpha) and self.lora_alpha > 0, "scft_lora_alpha", self.lora_alpha, "> 0")
        ok_dropout = _is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1
        _require(ok_dropout, "scft_lora_dropout", self.lora_dropout, "in [0, 1)")
        _require(_is_number(self.lr) and self.lr > 0, "scft_lr", self.lr, "a number > 0")
        ok_decay = _is_number(self.weight_decay) and self.weight_decay >= 0
        _require(ok_decay, "scft_weight_decay", self.weight_decay, "a number >= 0")
        ok_clip = self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip >= 0)
        _require(ok_clip, "scft_grad_clip", self.grad_clip, "a number >= 0 (0 or ~ = no clipping)")
        _require(
            _is_int(self.batch_size, 2), "scft_batch_size", self.batch_size, "an integer >= 2 (in-batch negatives)"
        )
        _require(_is_int(self.grad_accum, 1), "scft_grad_accum", self.grad_accum, "an integer >= 1")
        _require(_is_int(self.max_steps, 1), "scft_max_steps", self.max_steps, "an integer >= 1")
        ok_epochs = self.epochs is None or (_is_number(self.epochs) and self.epochs > 0)
        _require(ok_epochs, "scft_epochs", self.epochs, "~ or a number > 0")
        _require(_is_int(self.max_length, 2), "scft_max_length", self.max_length, "an integer >= 2")
        _require(_is_int(self.seed, 0), "scft_seed", self.seed, "an integer >= 0")

    def total_steps(self, n_items):
        """Optimizer steps: `max_steps`, or with `epochs` ceil(epochs * n_items / pairs per step)."""
        if self.epochs is None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_items / (self.batch_size * self.grad_accum)))

    def as_dict(self):
        """JSON-friendly form (targets as a list), for the encoder identity and the adapter manifest."""
        out = asdict(self)
        if isinstance(self.lora_targets, tuple):
            out["lora_targets"] = list(self.lora_targets)
        return out


def _check_targets(targets):
    """ "all-linear" (peft picks every linear layer but the output head) or a tuple of module names."""
    if targets == "all-linear":
        return targets
    if isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets):
        return tuple(targets)
    raise ConfigError(
        f"`scft_lora_targets` must be 'all-linear' or a list of module names (e.g. [q_proj, v_proj]), got {targets!r}."
    )


# --------------------------------------------------------------------------- peft and rng
def import_peft():
    """peft, imported only when SCFT really trains or loads an adapter (it is an optional extra)."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"LLMEmb's SCFT needs the peft package: {PEFT_HINT}.") from None
    return peft


def peft_version():
    """peft's version from its metadata: part of the identity, read without importing peft."""
    try:
        return importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"LLMEmb's SCFT needs the peft package: {PEFT_HINT}.") from None


@contextlib.contextmanager
def seeded_torch_rng(seed, device):
    """Private torch RNG state seeded by `seed`; the caller's state is restored afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def attributes_digest(attributes):
    """sha256 of the attribute lists, item boundaries included (JSON keeps them apart)."""
    blob = json.dumps([list(a) for a in attributes], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _canonical(obj):
    """`obj` as it reads back from JSON (tuples become lists), so identities compare exactly."""
    return json.loads(json.dumps(obj, sort_keys=True))


class ItemBatches:
    """Endless batches of distinct items, the catalogue reshuffled by `rng` at every pass.

    A trailing batch of a single item is skipped: it has no in-batch negative, so its loss is
    identically 0 and it would only spend a forward pass. `state()`/`restore()` carry the
    position and the shuffle stream, so a resumed SCFT sees the batches the interrupted one
    would have seen next."""

    def __init__(self, items, batch_size, rng):
        self.items = list(items)
        self.size = min(batch_size, len(self.items))
        self.rng = rng
        self.order, self.position = [], 0

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self.position >= len(self.order):
                self.order = self.items[:]
                self.rng.shuffle(self.order)
                self.position = 0
            batch = self.order[self.position : self.position + self.size]
            self.position += self.size
            if len(batch) >= 2:
                return batch

    def state(self):
        return {"rng": python_rng_state(self.rng), "order": list(self.order), "position": self.position}

    def restore(self, state):
        set_python_rng_state(self.rng, state["rng"])
        self.order, self.position = list(state["order"]), int(state["position"])


def tokenizer_needs_eos(tokenizer):
    """True for tokenizers with an EOS token that they do not append (decoder-only LLMs).

    The original appended EOS to every LLaMA prompt, so the mean pools over it too; encoder
    tokenizers (BERT has no EOS, RoBERTa appends its own) are left as they are."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return not ids or ids[-1] != eos


# --------------------------------------------------------------------------- adapter files
def _file_hashes(directory):
    from recbole_tfllmer.text.store import file_sha256

    names = sorted(n for n in os.listdir(directory) if n != ADAPTER_MANIFEST and not n.startswith("."))
    return {n: file_sha256(os.path.join(directory, n)) for n in names if os.path.isfile(os.path.join(directory, n))}


def _fsync_files(directory):
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _replace_dir(source, target):
    """Move the complete `source` dir to `target`; an older `target` is moved aside, then removed."""
    parent = os.path.dirname(target)
    old = None
    if os.path.lexists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".old", dir=parent)
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_adapter_manifest(adapter_dir):
    """The manifest of a complete adapter dir (every file present with its recorded sha256), or None."""
    if not adapter_dir or not os.path.isdir(adapter_dir):
        return None
    try:
        with open(os.path.join(adapter_dir, ADAPTER_MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != ADAPTER_FORMAT:
        return None
    files = manifest.get("files") or {}
    if not files or _file_hashes(adapter_dir) != files:
        return None
    return manifest


# --------------------------------------------------------------------------- encoder
class SCFTEncoder:
    """A text encoder fine-tuned by SCFT on the items' attribute prompts, then frozen.

    `attributes` holds the attribute lists of *every* item (SCFT trains on the whole catalogue,
    as the original did); items with an empty list are not trained on. `encode` takes the texts
    to embed, normally the items' full prompts. Vectors are the pooled last hidden states,
    unnormalised unless `normalize` (the raw norms are what the rest of the plugin studies).
    `adapter_dir`, when given, keeps the LoRA weights: a later encoder with the same identity
    loads them instead of training again; an interrupted training resumes from its last
    progress save (every `progress_seconds`, beside `adapter_dir`).
    """

    kind = "scft"

    def __init__(
        self,
        model_path,
        attributes,
        recipe=None,
        fmt=None,
        pooling="mean",
        device=None,
        dtype="float32",
        batch_size=64,
        normalize=False,
        adapter_dir=None,
        show_progress=False,
        allow_download=False,
        progress_seconds=120,
    ):
        self.allow_download = bool(allow_download)
        self.model_path = resolve_model_path(model_path, self.allow_download)
        self.model_name = model_display_name(self.model_path)
        self.attributes = [[str(a) for a in item] for item in attributes]
        self.recipe = recipe if recipe is not None else SCFTRecipe()
        self.fmt = fmt if fmt is not None else PromptFormat()
        self.pooling = check_value(BY_NAME["text_pooling"], pooling)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.batch_size = check_value(BY_NAME["text_batch_size"], batch_size)
        self.normalize = bool(normalize)
        self.adapter_dir = os.path.abspath(os.path.expanduser(str(adapter_dir))) if adapter_dir else None
        self.show_progress = bool(show_progress)
        self.progress_seconds = float(progress_seconds)
        self.model = None
        self.tokenizer = None
        self.tau = None
        self.train_report = None
        self.load_seconds = 0.0
        self._identity = None
        self._dimension = None

    # ----------------------------------------------------------------- protocol
    @property
    def identity(self):
        """What decides the vectors, computed without loading weights (the cache key's encoder part)."""
        if self._identity is None:
            self._identity = {
                "kind": self.kind,
                "model": self.model_name,
                "model_fingerprint": model_fingerprint(self.model_path),
                "pooling": self.pooling,
                "normalize": self.normalize,
                "max_length": self.recipe.max_length,
                "dtype": self.dtype,
                "scft": self.recipe.as_dict(),
                "prompt_format": self.fmt.as_dict(),
                "attributes_sha256": attributes_digest(self.attributes),
                "peft": peft_version(),
            }
        return dict(self._identity)

    @property
    def dimension(self):
        """Hidden size from the model config: known before (and without) any training."""
        if self._dimension is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.model_path, local_files_only=not self.allow_download)
            self._dimension = int(config.hidden_size)
        return self._dimension

    @property
    def loaded(self):
        return self.train_report is not None

    def load(self):
        """Same as `prepare()`: `encode_with_cache` calls it on a miss and times it as loading."""
        return self.prepare()

    def encode(self, texts):
        """float32 (len(texts), D) vectors from the fine-tuned model; trains (or loads) it first."""
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self.prepare()
        self.model.eval()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="encode (SCFT)", disable=not self.show_progress):
            idx = order[start : start + self.batch_size]
            with torch.inference_mode():
                pooled = self._pooled([texts[i] for i in idx])
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.identity})"

    # ----------------------------------------------------------------- model
    def prepare(self):
        """Build the LoRA model, then load a matching saved adapter or train and save one; once."""
        if self.train_report is not None:
            return self
        t0 = time.perf_counter()
        self.build()
        report = self._load_adapter()
        if report is None:
            report = self._fit()
            self._save_adapter(report)
        self.model.eval()
        self.train_report = report
        self.load_seconds = time.perf_counter() - t0
        return self

    def build(self):
        """Base model + fresh LoRA (seeded, untrained) as `.model`; idempotent, no training."""
        if self.model is not None:
            return self
        peft = import_peft()
        import torch
        from transformers import AutoModel, AutoTokenizer

        local_only = not self.allow_download
        tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=local_only)
        kwargs = {"local_files_only": local_only}
        if self.dtype != "float32":
            kwargs["dtype"] = _torch_dtype(self.dtype)
        with seeded_torch_rng(self.recipe.seed, self.device):
            base = AutoModel.from_pretrained(self.model_path, **kwargs)
            if getattr(base.config, "is_encoder_decoder", False):
                raise ConfigError(
                    f"SCFT fine-tunes encoder-only or decoder-only models; {self.model_name} is an "
                    f"encoder-decoder. Use an LLM or a sentence encoder as `text_encoder`."
                )
            if ensure_pad_token(tokenizer):
                base.resize_token_embeddings(len(tokenizer))
            self._prepare_base(base)
            model = self._wrap_lora(peft, base.to(self.device))
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        self._append_eos = tokenizer_needs_eos(tokenizer)
        positions = getattr(base.config, "max_position_embeddings", None)
        self._max_tokens = min(self.recipe.max_length, positions or self.recipe.max_length)
        if self.recipe.tau_learnable:
            self.tau = torch.nn.Parameter(torch.tensor(float(self.recipe.tau_init), device=self.device))
        self.model = model
        return self

    def _prepare_base(self, base):
        """No KV cache (never used, costs memory); gradient checkpointing on CUDA only, where
        memory is what limits a 7B model (on CPU it would only slow the small models down)."""
        if hasattr(base.config, "use_cache"):
            base.config.use_cache = False
        if self.device.startswith("cuda") and getattr(base, "supports_gradient_checkpointing", False):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _wrap_lora(self, peft, base):
        recipe = self.recipe
        targets = recipe.lora_targets if isinstance(recipe.lora_targets, str) else list(recipe.lora_targets)
        config = peft.LoraConfig(
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
            target_modules=targets,
            bias="none",
        )
        try:
            return peft.get_peft_model(base, config)
        except ValueError as e:
            raise ConfigError(
                f"`scft_lora_targets` {recipe.lora_targets!r} do not fit {self.model_name}: {e}"
            ) from None

    def tokenize(self, texts):
        """(input_ids, attention_mask) as training and encoding see them: truncated, EOS appended where
        the tokenizer does not append it, right-padded (pads are masked out of every pooling)."""
        import torch

        self.build()
        limit = self._max_tokens - (1 if self._append_eos else 0)
        rows = self.tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]
        if self._append_eos:
            rows = [row + [self.tokenizer.eos_token_id] for row in rows]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _autocast(self):
        import torch

        if self.device.startswith("cuda") and self.dtype == "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _pooled(self, texts):
        """(len(texts), D) float32 pooled last hidden states, with gradients when training."""
        ids, mask = self.tokenize(texts)
        with self._autocast():
            hidden = self.model(input_ids=ids, attention_mask=mask)[0]
        return pool_hidden_states(hidden.float(), mask, self.pooling)

    def tau_value(self):
        """tau as a python float (for reports and logs)."""
        tau = self._current_tau()
        return float(tau.detach()) if hasattr(tau, "detach") else float(tau)

    def _current_tau(self):
        """tau as the loss sees it: the learnable parameter clamped to stay positive, or the fixed value."""
        if self.tau is None:
            return float(self.recipe.tau_init)
        return self.tau.clamp(min=TAU_MIN)

    # ----------------------------------------------------------------- training
    def _trainable(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + ([self.tau] if self.tau is not None else [])

    def _fit(self):
        """Train LoRA (and tau) on attribute-drop pairs; returns the train report.

        With an `adapter_dir`, the whole training state (LoRA weights, tau, optimizer, schedule,
        batch and view streams, torch RNG) is saved beside it every `progress_seconds`, and a
        later run with the same identity continues from there: the adapter it ends with is the
        one the uninterrupted run would have trained, bit for bit."""
        import torch
        from tqdm.auto import tqdm

        recipe = self.recipe
        items = self._training_items()
        total = recipe.total_steps(len(items))
        params = self._trainable()
        n_trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / total))
        sampler = ViewSampler(self.attributes, recipe.drop_ratio, recipe.seed, recipe.resample_views, self.fmt)
        batches = ItemBatches(items, recipe.batch_size, random.Random(recipe.seed))
        streams = {"optimizer": optimizer, "scheduler": scheduler, "sampler": sampler, "batches": batches}
        every = max(1, total // 10)
        self.model.train()
        with seeded_torch_rng(recipe.seed, self.device):
            done, losses, spent = self._load_progress(total, streams)
            self._log_start(len(items), total, n_trainable, done)
            t0, saved_at = time.perf_counter() - spent, time.perf_counter()
            steps = range(done, total)
            for step in tqdm(steps, desc="SCFT", initial=done, total=total, disable=not self.show_progress):
                losses.append(self._step(step, batches, sampler, optimizer, scheduler, params))
                if (step + 1) % every == 0 and step + 1 < total:
                    self._log_progress(step + 1, total, losses[-1], optimizer, time.perf_counter() - t0)
                if step + 1 < total and time.perf_counter() - saved_at >= self.progress_seconds:
                    self._save_progress(step + 1, total, streams, losses, time.perf_counter() - t0)
                    saved_at = time.perf_counter()
        self.model.eval()
        report = self._report(total, time.perf_counter() - t0, losses, adapter_loaded=False)
        report["resumed_at_step"] = done
        self._log_end(report)
        return report

    # ----------------------------------------------------------------- mid-training progress
    @property
    def progress_path(self):
        """Where an unfinished SCFT keeps its state: beside the adapter dir, removed once it is saved."""
        return f"{self.adapter_dir}.progress.pth" if self.adapter_dir else None

    def _save_progress(self, done, total, streams, losses, seconds):
        import torch

        from recbole_tfllmer.checkpoint import atomic_torch_save

        state = {
            "format": ADAPTER_FORMAT,
            "identity": _canonical(self.identity),
            "done": done,
            "total": total,
            "lora": {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad},
            "tau": None if self.tau is None else self.tau.detach().cpu().clone(),
            "optimizer": streams["optimizer"].state_dict(),
            "scheduler": streams["scheduler"].state_dict(),
            "sampler": streams["sampler"].state(),
            "batches": streams["batches"].state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.startswith("cuda") else None,
            "losses": list(losses),
            "seconds": float(seconds),
        }
        os.makedirs(os.path.dirname(self.progress_path), exist_ok=True)
        atomic_torch_save(state, self.progress_path)

    def _load_progress(self, total, streams):
        """(steps done, losses so far, seconds spent) from a matching progress file, else (0, [], 0.0).

        A file of another identity, or one that does not load, is ignored (and logged): the run
        then trains from step 0 and overwrites it at its first save."""
        import torch

        path = self.progress_path
        if path is None or not os.path.isfile(path):
            return 0, [], 0.0
        log = logging.getLogger()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            matches = (
                isinstance(state, dict)
                and state.get("format") == ADAPTER_FORMAT
                and state.get("identity") == _canonical(self.identity)
                and state.get("total") == total
            )
        except Exception as e:  # a damaged file costs only the steps it held
            log.info(f"SCFT progress {path} cannot be read ({type(e).__name__}): training from step 0")
            return 0, [], 0.0
        if not matches:
            log.info(f"SCFT progress {path} belongs to another recipe or catalogue: training from step 0")
            return 0, [], 0.0
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["lora"].items():
                named[name].copy_(value.to(named[name].device))
            if self.tau is not None and state["tau"] is not None:
                self.tau.copy_(state["tau"].to(self.tau.device))
        streams["optimizer"].load_state_dict(state["optimizer"])
        streams["scheduler"].load_state_dict(state["scheduler"])
        streams["sampler"].restore(state["sampler"])
        streams["batches"].restore(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        log.info(f"SCFT resumed at step {state['done']}/{total} from {path}")
        return int(state["done"]), list(state["losses"]), float(state["seconds"])

    def _drop_progress(self):
        if self.progress_path and os.path.exists(self.progress_path):
            os.remove(self.progress_path)

    def _training_items(self):
        """Indices of the items SCFT trains on: those with at least one attribute."""
        items = [i for i, a in enumerate(self.attributes) if a]
        if len(items) < 2:
            raise ConfigError(
                f"SCFT needs at least 2 items with attributes (in-batch negatives), found {len(items)}. "
                f"Check `text_fields`."
            )
        return items

    def _report(self, steps, seconds, losses, adapter_loaded):
        """The `train_report` dict: what was trained (or loaded), for logs and the run's info."""
        return {
            "steps": steps,
            "seconds": seconds,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "tau": self.tau_value(),
            "adapter_loaded": adapter_loaded,
            "n_items": sum(1 for a in self.attributes if a),
            "trainable_parameters": sum(p.numel() for p in self._trainable()),
        }

    def _step(self, step, batches, sampler, optimizer, scheduler, params):
        """One optimizer step over `grad_accum` contrastive groups; returns their mean loss."""
        import torch

        recipe = self.recipe
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(recipe.grad_accum):
            batch = next(batches)
            pairs = [sampler.pair(i) for i in batch]
            pooled = self._pooled([p[0] for p in pairs] + [p[1] for p in pairs])  # one forward, 2B views
            loss = contrastive_loss(recipe.loss, pooled[: len(batch)], pooled[len(batch) :], self._current_tau())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"SCFT loss is {loss.item()} at step {step + 1}; lower `scft_lr` or use `scft_dtype: float32`."
                )
            (loss / recipe.grad_accum).backward()
            step_loss += loss.item() / recipe.grad_accum
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        return step_loss

    def _log_start(self, n_items, total, n_trainable, done=0):
        r = self.recipe
        resumed = f" (resuming after step {done})" if done else ""
        logging.getLogger().info(
            f"SCFT of {self.model_name}{resumed}: {total} steps of {r.grad_accum} x {r.batch_size} pairs over {n_items} items "
            f"on {self.device} ({self.dtype}); loss {r.loss}, tau {r.tau_init} "
            f"({'learnable' if r.tau_learnable else 'fixed'}), LoRA r={r.lora_r} on {r.lora_targets}, "
            f"{n_trainable} trainable parameters"
        )

    def _log_progress(self, done, total, loss, optimizer, seconds):
        logging.getLogger().info(
            f"SCFT step {done}/{total}: loss {loss:.4f}, tau {self.tau_value():.4f}, "
            f"lr {optimizer.param_groups[0]['lr']:.2e}, {seconds:.0f} s"
        )

    def _log_end(self, report):
        logging.getLogger().info(
            f"SCFT done: {report['steps']} steps in {report['seconds']:.1f} s, loss {report['first_loss']:.4f} -> "
            f"{report['last_loss']:.4f}, tau {report['tau']:.4f}"
        )

    # ----------------------------------------------------------------- adapter
    def _load_adapter(self):
        """Report of a loaded adapter when `adapter_dir` holds a complete one for this identity, else None."""
        manifest = read_adapter_manifest(self.adapter_dir)
        if manifest is None:
            return None
        if manifest.get("identity") != _canonical(self.identity):
            logging.getLogger().info(f"SCFT adapter {self.adapter_dir} was trained for another identity: retraining")
            return None
        peft = import_peft()
        try:
            weights = peft.load_peft_weights(self.adapter_dir, device=self.device)
            result = peft.set_peft_model_state_dict(self.model, weights)
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"SCFT adapter {self.adapter_dir} cannot be loaded ({e}); delete it to retrain."
            ) from None
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise CheckpointError(
                f"SCFT adapter {self.adapter_dir} does not fit the model (missing {missing[:3]}, unexpected "
                f"{list(result.unexpected_keys)[:3]}); delete it to retrain."
            )
        if self.tau is not None:
            self.tau.data.fill_(float(manifest["tau"]))
        logging.getLogger().info(f"SCFT adapter loaded from {self.adapter_dir} (no training)")
        return self._report(0, 0.0, [], adapter_loaded=True) | {
            "tau": float(manifest["tau"]),
            "trained": manifest.get("train_report"),
        }

    def _save_adapter(self, report):
        """Write the adapter into a temp dir beside `adapter_dir`, then move it there in one rename."""
        if self.adapter_dir is None:
            return
        parent = os.path.dirname(self.adapter_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.adapter_dir)}.", suffix=".tmp", dir=parent)
        try:
            # only the LoRA weights: the base (and any pad row the build added, seeded) is rebuilt
            # identically; "auto" might also look the base model up on the hub
            self.model.save_pretrained(tmp, save_embedding_layers=False)
            manifest = {
                "format": ADAPTER_FORMAT,
                "identity": _canonical(self.identity),
                "tau": report["tau"],
                "train_report": report,
                "files": _file_hashes(tmp),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_text(os.path.join(tmp, ADAPTER_MANIFEST), json.dumps(manifest, indent=1))
            _fsync_files(tmp)
            _replace_dir(tmp, self.adapter_dir)
            self._drop_progress()
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_out_of_space(err):
                raise out_of_space_error(self.adapter_dir, what_to_do="free space on it") from None
            raise
        logging.getLogger().info(f"SCFT adapter saved to {self.adapter_dir}")
