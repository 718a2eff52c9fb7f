"""The frozen causal LM of A-LLMRec stage 2 (spec B.4, C.4 `lm.py`).

Local paths only: nothing is fetched from a model hub unless `allow_download` is true, so a
typo in `allmrec_llm` fails at once instead of starting a multi-GB download. The tokenizer
gets the three marker tokens (their embedding rows are overwritten by soft tokens, so their
initial values never matter) and a pad token if it has none; every parameter is frozen and
the model stays in eval mode (no dropout), so the LM is a fixed function of its inputs.
"""

import logging
import os
from dataclasses import dataclass

from recbole_tfllmer.allmrec.prompts import MARKERS
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.text.encoders import _resolve_device, _torch_dtype, ensure_pad_token

DTYPES = ("float32", "float16", "bfloat16")
BITSANDBYTES_HINT = "install bitsandbytes (pip install bitsandbytes)"


@dataclass
class FrozenLM:
    """A loaded, frozen causal LM and what stage 2 needs to know about its tokenizer."""

    model: object
    tokenizer: object
    marker_ids: dict
    eos_id: int
    device: str
    dtype: object  # torch.dtype of the input embeddings

    @property
    def hidden_size(self):
        """Width of the input token embeddings: the soft tokens must have exactly this width."""
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def pad_id(self):
        return int(self.tokenizer.pad_token_id)

    def embed(self, token_ids):
        """Token embeddings of (B, L) ids, as the model would look them up itself."""
        return self.model.get_input_embeddings()(token_ids.to(self.device))


def local_lm_path(path, allow_download=False):
    """`path` as an absolute local directory (or the hub id when downloads are allowed)."""
    if not path or not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"`allmrec_llm` must be the path of a local causal LM checkpoint, got {path!r}.")
    local = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(local):
        return local
    if allow_download:
        return os.fspath(path)
    raise ConfigError(
        f"`allmrec_llm` {os.fspath(path)!r} is not a local directory ({local} does not exist); "
        f"set it to a local causal LM checkpoint (config.json, weights and tokenizer)."
    )


def effective_dtype(dtype, device):
    """The dtype actually used: half precision only on CUDA, float32 elsewhere (with a warning,
    so a GPU config moved to a CPU box still runs)."""
    name = str(dtype or "float32")
    if name not in DTYPES:
        raise ConfigError(f"`allmrec_llm_dtype` must be one of {list(DTYPES)}, got {dtype!r}.")
    if name != "float32" and not device.startswith("cuda"):
        logging.getLogger().warning(
            f"A-LLMRec: `allmrec_llm_dtype: {name}` needs a CUDA device (device is {device!r}); using float32."
        )
        name = "float32"
    return name


def eight_bit_config(device, dtype):
    """(`BitsAndBytesConfig` for int8 weights, A-LLMRec's own setting; the dtype of the rest); CUDA only."""
    if not device.startswith("cuda"):
        raise ConfigError(f"`allmrec_llm_8bit: true` needs a CUDA device (device is {device!r}); set it to false.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"`allmrec_llm_8bit: true` needs bitsandbytes: {BITSANDBYTES_HINT}, or set it to false."
        ) from None
    from transformers import BitsAndBytesConfig

    dtype_name = effective_dtype(dtype, device)
    if dtype_name == "float32":
        dtype_name = "float16"  # int8 matmuls compute in half precision
    return BitsAndBytesConfig(load_in_8bit=True), dtype_name


def end_token_id(tokenizer):
    """EOS id, else SEP (BERT tokenizers, as the tests use): the token that ends a title."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ConfigError(
        "`allmrec_llm`'s tokenizer has neither an eos nor a sep token; use a causal LM checkpoint whose "
        "tokenizer defines `eos_token`."
    )


def add_markers(tokenizer):
    """Register the marker tokens (and a pad if missing) as special tokens, so they are never split.
    Returns {marker: token id}."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)}, replace_additional_special_tokens=False)
    ensure_pad_token(tokenizer)
    ids = {marker: tokenizer.convert_tokens_to_ids(marker) for marker in MARKERS}
    if len(set(ids.values())) != len(MARKERS) or tokenizer.unk_token_id in ids.values():
        raise ConfigError(f"`allmrec_llm`'s tokenizer could not add the marker tokens {MARKERS}: got ids {ids}.")
    return ids


def freeze(model):
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def load_causal_lm(path, dtype="bfloat16", device=None, load_in_8bit=False, allow_download=False):
    """Load `AutoModelForCausalLM` + `AutoTokenizer` from `path`, add the markers, freeze it all."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_lm_path(path, allow_download)
    device = _resolve_device(device)
    local_only = not allow_download
    kwargs = {"local_files_only": local_only}
    if load_in_8bit:  # checked first: on a CPU box the 8-bit error is the one that matters
        kwargs["quantization_config"], dtype_name = eight_bit_config(device, dtype)
        kwargs["device_map"] = {"": device}
    else:
        dtype_name = effective_dtype(dtype, device)
    kwargs["dtype"] = _torch_dtype(dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    marker_ids = add_markers(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # never shrink: many LMs pad their vocabulary
    if not load_in_8bit:
        model.to(device)
    freeze(model)
    dtype = model.get_input_embeddings().weight.dtype
    return FrozenLM(model, tokenizer, marker_ids, end_token_id(tokenizer), device, dtype)
