"""Every option of the plugin, declared once: name, type and range, default, help, and which
methods read it.

From these declarations come the package defaults (`properties/model/TFLLMER.yaml` is
generated from them and a test keeps the two equal), the README's option table, one
validation pass (`validate_options`, run by `quick_start.build_config` before any data is
read or encoded) and the typed option records the wrapper and the data hook take. Pure
math functions (graph, Rec-PCA) keep their own argument checks; their ValueErrors are
mapped here to a ConfigError naming the option.

    python -m recbole_tfllmer.options --yaml [MODEL]   # properties/model/<MODEL>.yaml, from the declarations
    python -m recbole_tfllmer.options --markdown   # the README's option table
"""

import math
import os
import sys
from dataclasses import dataclass, replace

from recbole_tfllmer.errors import ConfigError

PLUGIN_METHODS = ("TFLLMER", "LLMEmb", "ALLMRec")


@dataclass(frozen=True)
class Option:
    name: str
    default: object
    help: str
    group: str
    kind: str = "any"  # choice | number | int | bool | str | checked (by a pure function) | any
    choices: tuple = ()
    minimum: float = None
    maximum: float = None
    positive: bool = False  # strictly > 0
    nullable: bool = False  # ~ (None) is a valid value
    hint: str = ""  # said in the error message after the rule
    values: str = ""  # the values column of the docs, where the kind does not say it
    methods: tuple = PLUGIN_METHODS  # the plugin models that read it (set per group, GROUP_METHODS)
    method_defaults: tuple = ()  # (model, default) pairs where a model's default differs

    def default_for(self, model=None):
        return dict(self.method_defaults).get(model, self.default)


GROUPS = {
    "backbone": "backbone",
    "text": "item text -> LLM embeddings (data hook)",
    "init": "item initialisation",
    "graph": "co-occurrence graph (training split only)",
    "norm": "normalisation",
    "run": "running",
    "prompt": "LLMEmb: attribute prompts",
    "scft": "LLMEmb stage 1: supervised contrastive fine-tuning (SCFT) of the text encoder, LoRA",
    "rat": "LLMEmb stage 2: recommendation adaptation training (RAT)",
    "allmrec": "A-LLMRec: frozen collaborative model, stage 1 (alignment), stage 2 (a frozen LLM), candidates",
}
# Groups that one model reads (the others are read by every plugin model).
GROUP_METHODS = {
    "init": ("TFLLMER",),
    "graph": ("TFLLMER",),
    "prompt": ("LLMEmb",),
    "scft": ("LLMEmb",),
    "rat": ("LLMEmb",),
    "allmrec": ("ALLMRec",),
    "norm": ("TFLLMER", "LLMEmb"),
}

ITEM_INIT_CHOICES = ("random", "pca", "rec_pca")
ITEM_NORM_CHOICES = ("always", "init", "none")
NORM_SCALE_AUTO = "auto"
MISSING_TEXT_POLICIES = ("error", "zero", "mean")
TEXT_ENCODER_TYPES = ("auto", "sentence-transformers", "transformers")
TEXT_POOLINGS = ("mean", "last", "cls")
TEXT_DTYPES = ("float32", "float16", "bfloat16")

OPTIONS = (
    # -- backbone ----------------------------------------------------------------------------
    Option("backbone", "SASRec", "any supported RecBole sequential model (see README)", "backbone", "str"),
    # -- item text ---------------------------------------------------------------------------
    Option(
        "text_fields",
        None,
        ".item fields to embed; ~ = every token/token_seq field but the item id",
        "text",
        nullable=True,
        values="list of fields (or one comma-separated string)",
    ),
    Option(
        "text_template",
        None,
        'e.g. "Title: {title}. Brand: {brand}"; ~ = "field: value" joined by ". "',
        "text",
        "str",
        nullable=True,
        methods=("TFLLMER", "ALLMRec"),  # LLMEmb builds attribute prompts (llmemb_* options)
    ),
    Option("missing_text_policy", "error", "items whose text is empty", "text", "choice", MISSING_TEXT_POLICIES),
    Option(
        "text_encoder", "all-MiniLM-L6-v2", "sentence-transformers name/path, or HF transformers path", "text", "str"
    ),
    Option("text_encoder_type", "auto", "which library loads `text_encoder`", "text", "choice", TEXT_ENCODER_TYPES),
    Option(
        "text_pooling", "mean", "transformers only: how token states become one vector", "text", "choice", TEXT_POOLINGS
    ),
    Option(
        "text_normalize",
        None,
        "~ = encoder default; true/false forces L2 normalisation of text vectors",
        "text",
        "bool",
        nullable=True,
    ),
    Option("text_batch_size", 64, "texts per encoder batch", "text", "int", minimum=1),
    Option("text_max_length", 128, "tokens per text (longer texts are truncated)", "text", "int", minimum=1),
    Option("text_device", None, "~ = the run's device", "text", "str", nullable=True),
    Option("text_dtype", "float32", "half precision on GPU only", "text", "choice", TEXT_DTYPES),
    Option("text_allow_download", False, "never reach a model hub unless asked", "text", "bool"),
    Option(
        "embedding_cache_dir",
        None,
        "~ = next to the dataset if writable, else saved/embedding_cache",
        "text",
        "str",
        nullable=True,
    ),
    Option(
        "embedding_chunk_size",
        4096,
        "items per checksummed chunk: a killed encoding resumes from completed " "chunks",
        "text",
        "int",
        minimum=1,
    ),
    Option(
        "precomputed_embeddings",
        None,
        "bring-your-own file: .npy (+ .tokens.txt) or atomic " '"iid:token emb:float_seq"',
        "text",
        "str",
        nullable=True,
    ),
    # -- item initialisation -----------------------------------------------------------------
    Option(
        "item_init",
        "rec_pca",
        "random | pca (= LLMInit) | rec_pca (the full method)",
        "init",
        "choice",
        ITEM_INIT_CHOICES,
    ),
    Option(
        "rec_pca_alpha",
        0.0,
        "trade-off in [0, 1] between kept semantic variance and graph agreement, each scaled to its best "
        "achievable value; 0 = plain PCA, the value validation chose (README); the boards' Rec-PCA presets use 0.35",
        "init",
        "number",
        minimum=0.0,
        maximum=1.0,
        hint="0 = plain PCA, 1 = graph agreement only",
    ),
    Option(
        "rec_pca_formulation",
        "item_space",
        "item_space = free item vectors from the implicit n x n operator (graph-regularised PCA); projection = "
        "Z = XW",
        "init",
        "choice",
        ("item_space", "projection"),
    ),
    Option("rec_pca_center", True, "centre the LLM vectors first", "init", "bool"),
    Option("rec_pca_row_normalize", False, "L2-normalise LLM vectors before centring", "init", "bool"),
    Option("rec_pca_whiten", False, "scale output components to unit variance", "init", "bool"),
    Option(
        "rec_pca_solver",
        "auto",
        "how the PCA part (and projection's D x D problems) is solved: auto = exact unless its D x D eigh "
        "costs more than subspace iteration (few items, very wide vectors)",
        "init",
        "checked",
        values="auto \\| exact \\| iterative",
    ),
    Option(
        "rec_pca_tol",
        1.0e-5,
        "iterative: stop when every top-d Ritz pair has ||Mv - tv|| <= tol * t_1",
        "init",
        "checked",
        values="number in (0, 1)",
    ),
    Option(
        "rec_pca_device",
        "auto",
        "where Rec-PCA's passes over the LLM vectors run: auto = the run's GPU when it has one, else numpy "
        "(CPU); a torch device runs them there in float32 with float64 sums",
        "init",
        "checked",
        values="auto \\| numpy \\| a torch device (cuda, cuda:1, cpu)",
    ),
    Option(
        "rec_pca_max_iter",
        100,
        "iterative: at most this many block steps (a warning says if tol was not " "reached)",
        "init",
        "checked",
        values="integer >= 1",
    ),
    Option(
        "init_scale",
        None,
        "~ = projected vectors as they are; float = rescale to this mean row norm",
        "init",
        "number",
        positive=True,
        nullable=True,
        hint="the mean row norm of the initial table, or ~ to keep the projection's",
    ),
    # -- graph -------------------------------------------------------------------------------
    Option(
        "graph_window",
        1,
        "1 = adjacent pairs, k = k-window, 0 or ~ = whole (truncated) sequence",
        "graph",
        "checked",
        nullable=True,
        values="integer >= 0",
    ),
    Option(
        "graph_weighting",
        "count",
        "log = log1p counts, inv_pop = count / sqrt(pop_i pop_j)",
        "graph",
        "checked",
        values="count \\| log \\| inv_pop",
    ),
    Option(
        "graph_topk",
        None,
        "keep the k strongest neighbours per item (~ = all)",
        "graph",
        "checked",
        nullable=True,
        values="integer >= 1",
    ),
    # -- normalisation -----------------------------------------------------------------------
    Option(
        "item_norm",
        "always",
        "always | init (only at initialisation) | none; LLMEmb: none (always stacks TF-LLMER's normalisation on "
        "its adapter, an ablation)",
        "norm",
        "choice",
        ITEM_NORM_CHOICES,
        method_defaults=(("LLMEmb", "none"),),
    ),
    Option(
        "item_norm_scale",
        "auto",
        "the norm r of every item vector; auto = the backbone's rule: 1 where its sequence vector leaves a "
        "LayerNorm (SASRec and the other Transformers), sqrt(d) (8 at d = 64) otherwise (GRU4Rec, ...), what "
        "validation chose for each (README); ~ = sqrt(d)",
        "norm",
        "checked",
        nullable=True,
        values="auto or a number > 0",
        hint="the norm r of every item vector, e.g. 8.0, ~ for sqrt(d), or auto",
    ),
    Option("item_norm_learnable", False, "learn r (one scalar) jointly with the model", "norm", "bool"),
    # -- running -----------------------------------------------------------------------------
    Option(
        "resume_from",
        None,
        "a checkpoint (.pth) this plugin wrote: training continues after its epoch, with its optimizer, "
        "early-stopping state and random number generators",
        "run",
        "str",
        nullable=True,
        methods=("TFLLMER", "LLMEmb"),  # A-LLMRec trains in fixed stages
    ),
    Option(
        "candidate_seed",
        0,
        "candidate evaluation (eval_args.mode uniN): numpy seed of the sampled candidates, the same for every "
        "method (test uses seed + 1); the training RNG state is restored after each evaluation",
        "run",
        "int",
    ),
    # -- LLMEmb: attribute prompts (seed-methods A.1) ---------------------------------------------
    Option(
        "llmemb_instruction",
        "The item has the following attributes: \n ",
        "the prompt's first line (their Beauty prompt: 'The beauty item has the following attributes:' + newline)",
        "prompt",
        "str",
    ),
    Option("llmemb_attr_template", "{name} is {value}", "one attribute of the prompt", "prompt", "str"),
    Option("llmemb_attr_sep", "; ", "between the attributes of the full prompt", "prompt", "str"),
    Option(
        "llmemb_attr_max_chars", 100, "each attribute value is cut to this many characters", "prompt", "int", minimum=1
    ),
    Option(
        "llmemb_attr_names",
        None,
        "display names {field: name} in the prompt; ~ = the field names",
        "prompt",
        "checked",
        nullable=True,
        values="mapping or ~",
    ),
    # -- LLMEmb stage 1: SCFT (seed-methods A.2) ---------------------------------------------------
    Option(
        "llmemb_scft",
        True,
        "fine-tune the encoder (false = LLMEmb w/o SCFT: the base encoder's vectors)",
        "scft",
        "bool",
    ),
    Option(
        "scft_drop_ratio",
        0.4,
        "share of an item's attributes each view drops (at least one is kept)",
        "scft",
        "number",
        minimum=0.0,
        maximum=0.99,
    ),
    Option(
        "scft_resample_views",
        True,
        "fresh views every time an item is drawn (false = one fixed pair, as the code)",
        "scft",
        "bool",
    ),
    Option(
        "scft_loss",
        "soft_clip",
        "soft_clip = the code's soft-target loss; infonce = cosine InfoNCE",
        "scft",
        "choice",
        ("soft_clip", "infonce"),
    ),
    Option(
        "scft_tau_init",
        3.0,
        "temperature (soft_clip: multiplies inside the targets, as the code)",
        "scft",
        "number",
        positive=True,
    ),
    Option("scft_tau_learnable", True, "learn the temperature (kept >= 0.01)", "scft", "bool"),
    Option("scft_lora_r", 8, "LoRA rank", "scft", "int", minimum=1),
    Option("scft_lora_alpha", 32, "LoRA alpha", "scft", "number", positive=True),
    Option("scft_lora_dropout", 0.1, "LoRA dropout", "scft", "number", minimum=0.0, maximum=0.99),
    Option(
        "scft_lora_targets",
        "all-linear",
        "modules LoRA wraps: all-linear (peft picks every linear layer but the output head) or a list of names",
        "scft",
        "checked",
        values="all-linear or list of module names",
    ),
    Option(
        "scft_lr", 2.0e-4, "AdamW learning rate, decayed linearly to 0, no warm-up", "scft", "number", positive=True
    ),
    Option("scft_weight_decay", 0.0, "AdamW weight decay", "scft", "number", minimum=0.0),
    Option("scft_grad_clip", 1.0, "gradient-norm clipping", "scft", "number", positive=True),
    Option("scft_batch_size", 32, "items per contrastive group (the in-batch negatives)", "scft", "int", minimum=2),
    Option(
        "scft_grad_accum", 4, "groups per optimizer step (4 x 32 = the code's 128-pair step)", "scft", "int", minimum=1
    ),
    Option("scft_max_steps", 4000, "optimizer steps (the code's)", "scft", "int", minimum=1),
    Option(
        "scft_epochs",
        None,
        "passes over the catalogue instead of scft_max_steps (~ = use scft_max_steps); the CPU boards use 5-10",
        "scft",
        "number",
        positive=True,
        nullable=True,
    ),
    Option(
        "scft_max_length",
        None,
        "prompt tokens in SCFT and encoding; ~ = text_max_length",
        "scft",
        "int",
        minimum=1,
        nullable=True,
    ),
    Option("scft_seed", 42, "SCFT's own seed, independent of the run's: one fine-tuning per dataset", "scft", "int"),
    # -- LLMEmb stage 2: RAT (seed-methods A.4) ----------------------------------------------------
    Option(
        "llmemb_pca_dim",
        1536,
        "PCA width P of the frozen table (clipped to the encoder width and n_items - 1)",
        "rat",
        "int",
        minimum=1,
    ),
    Option(
        "llmemb_adapter_hidden",
        None,
        "hidden width of the two-layer linear adapter; ~ = P / 2",
        "rat",
        "int",
        minimum=1,
        nullable=True,
    ),
    Option(
        "llmemb_freeze_llm_table", True, "keep the PCA table frozen (false = the w/o-frozen ablation)", "rat", "bool"
    ),
    Option(
        "llmemb_align_alpha",
        0.01,
        "weight of the collaborative alignment loss (0 = LLMEmb w/o alignment)",
        "rat",
        "number",
        minimum=0.0,
    ),
    Option("llmemb_align_tau", 2.0, "temperature of the alignment loss", "rat", "number", positive=True),
    Option("llmemb_align_loss", "soft_clip", "alignment loss form", "rat", "choice", ("soft_clip", "infonce")),
    Option(
        "llmemb_collab",
        None,
        "the collaborative item table to align with: an exported table (.npy + .tokens.txt, rows keyed by item token) "
        "or a checkpoint of an ID-only backbone; ~ = train a RandInit SASRec with this run's settings first (cached; "
        "boards use their RandInit cell's)",
        "rat",
        "str",
        nullable=True,
    ),
    # -- A-LLMRec (seed-methods Part B) ----------------------------------------------------------
    Option(
        "allmrec_cf_checkpoint",
        None,
        "the frozen collaborative model: a checkpoint (.pth) of an ID-only backbone (RandInit, or a RecBole model) "
        "trained on the same dataset; required (boards fill it)",
        "allmrec",
        "str",
        nullable=True,
    ),
    Option(
        "allmrec_cf_mode",
        "eval",
        "eval = deterministic frozen model; train = dropout on (their code)",
        "allmrec",
        "choice",
        ("eval", "train"),
    ),
    Option("allmrec_title_field", "title", ".item field with the titles the prompts show", "allmrec", "str"),
    Option(
        "allmrec_finetune_text_encoder",
        False,
        "fine-tune the text encoder in stage 1 (their code); false = the cached, frozen text vectors (CPU)",
        "allmrec",
        "bool",
    ),
    Option("allmrec_latent_dim", 128, "width of the joint collaborative-text latent", "allmrec", "int", minimum=1),
    Option(
        "allmrec_recon_item_weight",
        0.5,
        "stage 1: weight of the item reconstruction loss",
        "allmrec",
        "number",
        minimum=0.0,
    ),
    Option(
        "allmrec_recon_text_weight",
        0.2,
        "stage 1: weight of the text reconstruction loss",
        "allmrec",
        "number",
        minimum=0.0,
    ),
    Option("allmrec_stage1_epochs", 10, "stage 1 passes over the users", "allmrec", "int", minimum=0),
    Option("allmrec_stage1_batch_size", 32, "stage 1 users per step", "allmrec", "int", minimum=1),
    Option(
        "allmrec_stage1_lr", 1.0e-4, "stage 1 Adam learning rate (betas 0.9, 0.98)", "allmrec", "number", positive=True
    ),
    Option(
        "allmrec_llm",
        None,
        "a local causal LM (OPT, LLaMA, Qwen, ...) for stage 2; ~ = stage 1 only",
        "allmrec",
        "str",
        nullable=True,
    ),
    Option(
        "allmrec_llm_dtype", "bfloat16", "the LM's dtype on CUDA (float32 on CPU)", "allmrec", "choice", TEXT_DTYPES
    ),
    Option("allmrec_llm_8bit", False, "load the LM in 8-bit (bitsandbytes, CUDA only; their code)", "allmrec", "bool"),
    Option("allmrec_stage2_epochs", 5, "stage 2 passes over the users", "allmrec", "int", minimum=0),
    Option("allmrec_stage2_batch_size", 4, "stage 2 users per step (the paper's 4)", "allmrec", "int", minimum=1),
    Option(
        "allmrec_stage2_lr", 1.0e-4, "stage 2 Adam learning rate (betas 0.9, 0.98)", "allmrec", "number", positive=True
    ),
    Option("allmrec_history_len", 10, "history items shown in the prompt", "allmrec", "int", minimum=1),
    Option(
        "allmrec_domain",
        "item",
        "the prompt's phrases: item (bought/buy), movie (watched), game (played)",
        "allmrec",
        "choice",
        ("item", "movie", "game"),
    ),
    Option(
        "allmrec_eval",
        "both",
        "likelihood = rank candidates by the LM likelihood of their titles; both = also hit@1_gen (greedy generation)",
        "allmrec",
        "choice",
        ("likelihood", "both"),
    ),
    Option("allmrec_repetition_penalty", 1.5, "generation's repetition penalty", "allmrec", "number", positive=True),
    Option("allmrec_max_new_tokens", 64, "generation's length limit", "allmrec", "int", minimum=1),
)

OPTIONS = tuple(replace(o, methods=GROUP_METHODS[o.group]) if o.group in GROUP_METHODS else o for o in OPTIONS)
BY_NAME = {o.name: o for o in OPTIONS}
# Options that no longer exist, with what replaces them (a config that sets one fails loudly).
RENAMED = {
    "rec_pca_lambda": "use `rec_pca_alpha` in [0, 1]. `rec_pca_lambda` weighted an unscaled graph penalty whose "
    "useful range depended on the dataset (above 1 it picked the least-variance directions); `rec_pca_alpha` "
    "scales both terms to their best achievable value (0 = plain PCA; see README, Rec-PCA)",
}
DEFAULTS = {o.name: o.default for o in OPTIONS}


def default_of(name, fallback=None, model=None):
    """The declared default of a plugin option for `model` (`fallback` for a key the plugin does not own)."""
    return BY_NAME[name].default_for(model) if name in BY_NAME else fallback


def options_of(model):
    """The options `model` reads, in declaration order."""
    return tuple(o for o in OPTIONS if model in o.methods)


# -- validation ------------------------------------------------------------------------------
def check_value(option, value):
    """The value, checked against the declaration; ConfigError naming the option otherwise."""
    key = option.name
    if value is None and option.nullable:
        return None
    hint = f" ({option.hint})" if option.hint else ""
    if option.kind == "choice":
        if value not in option.choices:
            raise ConfigError(f"option `{key}` must be one of {', '.join(option.choices)}; got {value!r}")
    elif option.kind in ("number", "int"):
        integral = option.kind == "int"
        wrong_type = isinstance(value, bool) or not isinstance(value, int if integral else (int, float))
        if wrong_type or (not integral and (math.isnan(value) or math.isinf(value))):
            what = "an integer" if integral else "a finite number"
            raise ConfigError(f"option `{key}` must be {what}{hint}, got {value!r}")
        if option.positive and value <= 0:
            raise ConfigError(f"option `{key}` must be > 0{hint}, got {value!r}")
        if option.minimum is not None and value < option.minimum:
            raise ConfigError(f"option `{key}` must be >= {option.minimum:g}{hint}, got {value!r}")
        if option.maximum is not None and value > option.maximum:
            raise ConfigError(f"option `{key}` must be <= {option.maximum:g}{hint}, got {value!r}")
    elif option.kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"option `{key}` must be true or false, got {value!r}")
    elif option.kind == "str" and not isinstance(value, str):
        raise ConfigError(f"option `{key}` must be a string{hint}, got {value!r}")
    return value


def _lookup(config, key):
    try:
        return config[key]
    except (KeyError, TypeError):
        return None


def option_values(config, model=None):
    """{name: checked value} of every option `model` reads (a key the config lacks gets its
    default); model None = every declared option."""
    values = {}
    for option in options_of(model) if model else OPTIONS:
        value = _lookup(config, option.name)
        if value is None and not option.nullable:
            value = option.default_for(model)
        values[option.name] = check_value(option, value)
    return values


@dataclass(frozen=True)
class TextOptions:
    """How item text becomes LLM vectors (text/hook.py, text/encoders.py)."""

    fields: object  # list of .item fields, a comma-separated string, or None (all text fields)
    template: str
    missing_text_policy: str
    encoder: str
    encoder_type: str
    pooling: str
    normalize: bool
    batch_size: int
    max_length: int
    device: str
    dtype: str
    allow_download: bool
    cache_dir: str
    chunk_size: int
    precomputed: str


@dataclass(frozen=True)
class InitOptions:
    """How the item table is initialised (tfllmer/rec_pca.py)."""

    item_init: str
    rec_pca_alpha: float
    formulation: str
    center: bool
    row_normalize: bool
    whiten: bool
    solver: str
    tol: float
    max_iter: int
    init_scale: float
    device: str = "auto"  # rec_pca_device

    def pca_device(self, run_device):
        """The torch device for Rec-PCA's passes, or None for numpy: `auto` takes the run's GPU."""
        if self.device == "numpy":
            return None
        if self.device != "auto":
            return self.device
        return run_device if getattr(run_device, "type", str(run_device).split(":")[0]) == "cuda" else None

    @property
    def uses_llm_vectors(self):
        return self.item_init != "random"

    @property
    def alpha(self):
        """The trade-off Rec-PCA runs with: 0 for `pca` (LLMInit), `rec_pca_alpha` for `rec_pca`."""
        return float(self.rec_pca_alpha) if self.item_init == "rec_pca" else 0.0


@dataclass(frozen=True)
class GraphOptions:
    """The training split's co-occurrence graph (tfllmer/cooccurrence.py)."""

    window: int
    weighting: str
    topk: int


@dataclass(frozen=True)
class NormOptions:
    """Item-embedding normalisation (item_tables.py)."""

    mode: str
    scale: object  # a number, None = sqrt(d), or "auto"; resolved by `scale_for` once the table is known
    learnable: bool

    def scale_for(self, dim, sequence_layer_norm):
        """r for d-dimensional item vectors: the set value; sqrt(d) for `~` (the norm of a vector
        with unit-scale coordinates); for `auto`, 1 when the backbone's sequence vector leaves a
        LayerNorm (SASRec trained best at r = 1) and sqrt(d) otherwise (GRU4Rec's validation chose r = 3-10 at
        d = 64): README, "Choosing TF-LLMER's defaults"."""
        if self.scale == NORM_SCALE_AUTO:
            return 1.0 if sequence_layer_norm else math.sqrt(dim)
        return float(self.scale) if self.scale is not None else math.sqrt(dim)


@dataclass(frozen=True)
class LLMEmbOptions:
    """LLMEmb's two stages (llmemb/): the prompts, the SCFT recipe, and RAT's table and loss."""

    scft: bool
    prompt: object  # llmemb.prompts.PromptFormat
    recipe: object  # llmemb.scft.SCFTRecipe
    pca_dim: int
    adapter_hidden: int  # None = P / 2
    freeze_llm_table: bool
    align_alpha: float
    align_tau: float
    align_loss: str
    collab: str  # None: align_alpha == 0, or the table is trained first (llmemb/collab_model.py)


@dataclass(frozen=True)
class ALLMRecOptions:
    """A-LLMRec's frozen collaborative model, its two stages and its candidate scoring (allmrec/)."""

    cf_checkpoint: str
    cf_mode: str
    title_field: str
    finetune_text_encoder: bool
    latent_dim: int
    recon_item_weight: float
    recon_text_weight: float
    stage1_epochs: int
    stage1_batch_size: int
    stage1_lr: float
    llm: str  # None = stage 1 only (candidates scored by stage 1's recommendation head)
    llm_dtype: str
    llm_8bit: bool
    stage2_epochs: int
    stage2_batch_size: int
    stage2_lr: float
    history_len: int
    domain: str
    eval: str
    repetition_penalty: float
    max_new_tokens: int
    num_candidates: int  # 1 + N of `eval_args.mode: uniN`; None for full ranking (stage 1 alone)


@dataclass(frozen=True)
class PluginOptions:
    text: TextOptions
    init: InitOptions = None  # TFLLMER only
    graph: GraphOptions = None  # TFLLMER only
    norm: NormOptions = None
    llmemb: LLMEmbOptions = None  # LLMEmb only
    allmrec: ALLMRecOptions = None  # ALLMRec only
    source: tuple = ()  # the raw (name, value) pairs these records were checked from


def _cross_checks(v, model):
    """Rules that join several options, and the pure functions' own checks, as ConfigErrors."""
    if model == "TFLLMER":
        _tfllmer_checks(v)
    if model == "LLMEmb":
        _llmemb_checks(v)
    if model == "ALLMRec":
        return
    _check_norm_scale(v["item_norm_scale"])
    if v["item_norm_learnable"] and v["item_norm"] != "always":
        raise ConfigError(
            "conflicting options: `item_norm_learnable: true` learns the norm of the item vectors, "
            f"which needs `item_norm: always` (got `item_norm: {v['item_norm']}`). Set "
            "`item_norm: always`, or `item_norm_learnable: false`."
        )


def _check_norm_scale(value):
    """`item_norm_scale`: auto, ~ (None) or a finite number > 0."""
    if value is None or value == NORM_SCALE_AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"option `item_norm_scale` must be auto, ~ (sqrt(d)) or a finite number > 0 (the norm r of every item "
            f"vector, e.g. 8.0), got {value!r}"
        )


def _tfllmer_checks(v):
    from recbole_tfllmer.tfllmer.cooccurrence import check_graph_topk, check_graph_weighting, check_graph_window
    from recbole_tfllmer.tfllmer.rec_pca import check_solver_options

    for key, check in (
        ("graph_window", check_graph_window),
        ("graph_weighting", check_graph_weighting),
        ("graph_topk", check_graph_topk),
    ):
        try:
            check(v[key])
        except ValueError as err:
            raise ConfigError(f"option `{key}`: {err}") from None
    try:
        check_solver_options(v["rec_pca_solver"], v["rec_pca_tol"], v["rec_pca_max_iter"])
    except ValueError as err:
        raise ConfigError(f"option {err}") from None
    if v["rec_pca_device"] not in ("auto", "numpy"):
        from recbole_tfllmer.tfllmer.dense_passes import check_device

        try:
            check_device(v["rec_pca_device"])
        except ValueError as err:
            raise ConfigError(
                f"option `rec_pca_device`: {err}; use auto (the run's GPU, else numpy) or numpy"
            ) from None


def _llmemb_checks(v):
    if v["item_norm"] == "init":
        raise ConfigError(
            "`item_norm: init` rescales a trained table once, but LLMEmb's table is computed by its adapter at every "
            "use: use `item_norm: none` (LLMEmb) or `always` (its adapter's rows normalised at every use)"
        )
    names = v["llmemb_attr_names"]
    if names is not None and not (isinstance(names, dict) and all(isinstance(x, str) for x in names.values())):
        raise ConfigError(f"option `llmemb_attr_names` must map .item fields to display names, got {names!r}")
    targets = v["scft_lora_targets"]
    if not (
        targets == "all-linear" or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))
    ):
        raise ConfigError(
            f"option `scft_lora_targets` must be all-linear or a list of module names (e.g. [query, value]), got {targets!r}"
        )
    if "{value}" not in v["llmemb_attr_template"]:
        raise ConfigError(
            f"option `llmemb_attr_template` must contain {{value}} (and may contain {{name}}), got {v['llmemb_attr_template']!r}"
        )
    collab = v["llmemb_collab"]
    if v["llmemb_align_alpha"] > 0 and collab is not None and not os.path.isfile(os.path.expanduser(collab)):
        raise ConfigError(f"option `llmemb_collab`: file '{collab}' does not exist")
    if v["llmemb_scft"]:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise ConfigError(
                "LLMEmb's SCFT (`llmemb_scft: true`) needs the peft library: pip install 'peft>=0.21,<0.22' "
                "(or set `llmemb_scft: false`)"
            ) from None


def _encoder_checks(config, v):
    """The text encoder's existence, input limit and output width, from its config files: a
    mistake fails now, not after RecBole has read the dataset and the catalogue is encoded."""
    if v.get("item_init") == "random" or v["precomputed_embeddings"]:
        return
    from recbole_tfllmer.backbones import SUPPORTED_BACKBONES
    from recbole_tfllmer.text.encoders import encoder_limits, resolve_model_path

    path = resolve_model_path(v["text_encoder"], v["text_allow_download"])
    dim, max_length = encoder_limits(path)
    name = v["text_encoder"]
    if max_length is not None and v["text_max_length"] > max_length:
        raise ConfigError(
            f"option `text_max_length` ({v['text_max_length']}) exceeds the {max_length} tokens text encoder "
            f"{name!r} accepts (its config says so); set `text_max_length` <= {max_length}"
        )
    spec = SUPPORTED_BACKBONES.get(_lookup(config, "backbone"))
    width = _lookup(config, spec.width_option) if spec else None
    if _model_of(config) == "TFLLMER" and dim is not None and isinstance(width, int) and width > dim:
        raise ConfigError(
            f"the backbone's `{spec.width_option}` ({width}) exceeds the LLM embedding dimension ({dim}) of text "
            f"encoder {name!r}; Rec-PCA can only reduce dimensions. Use a text encoder with at least {width} "
            f"dimensions or set `{spec.width_option}` <= {dim}."
        )


def _raw_values(config):
    return tuple((o.name, repr(_lookup(config, o.name))) for o in OPTIONS)


def check_no_misspelt_options(user_options, known_options):
    """RecBole takes any key, so `--rec_pca_lamda=0.3` would be silently ignored: a key that is
    neither a RecBole option nor the plugin's but is one letter or two from a plugin option is
    a ConfigError with the option meant."""
    import difflib

    for key in user_options:
        if key in RENAMED:
            raise ConfigError(f"option `{key}` was replaced: {RENAMED[key]}")
        if key in BY_NAME or key in known_options:
            continue
        near = difflib.get_close_matches(key, list(BY_NAME), n=1, cutoff=0.85)
        if near:
            raise ConfigError(f"unknown option `{key}`: did you mean `{near[0]}`? (RecBole would ignore it silently)")


def _candidate_count(config, with_llm):
    """1 + N for RecBole's `eval_args.mode: uniN` (valid and test alike). With an LLM anything else is a
    ConfigError: A-LLMRec ranks the candidate list in its prompt and has no score for every item.
    Without one (stage 1 alone) `full` is fine too (None): its recommendation head scores every item."""
    mode = (_lookup(config, "eval_args") or {}).get("mode")
    modes = set(mode.values()) if isinstance(mode, dict) else {mode}
    if not with_llm and modes == {"full"}:
        return None
    counts = {int(m[3:]) for m in modes if isinstance(m, str) and m.startswith("uni") and m[3:].isdigit()}
    if len(counts) != 1 or len(modes) != 1:
        raise ConfigError(
            f"A-LLMRec ranks the candidate list of its prompt, not all items: set `eval_args.mode: uni19` (the target "
            f"+ 19 sampled items, for valid and test alike; candidate board), got {mode!r}"
            + ("" if with_llm else "; without `allmrec_llm`, stage 1 alone also ranks every item (`mode: full`)")
        )
    return counts.pop() + 1


def _allmrec_options(config, v):
    for key, what in (("allmrec_cf_checkpoint", "checkpoint"), ("allmrec_llm", "model directory")):
        path = v[key]
        if key == "allmrec_cf_checkpoint" and path is None:
            raise ConfigError(
                "A-LLMRec needs its frozen collaborative model: set `allmrec_cf_checkpoint` to the .pth of an ID-only "
                "backbone trained on the same dataset (e.g. the RandInit SASRec of a board, or `-m TFLLMER "
                "--item_init=random --item_norm=none --backbone=SASRec`)"
            )
        if path is not None and not os.path.exists(os.path.expanduser(path)):
            hint = (
                "; to train a small stand-in LM on the item text here: recbole-tfllmer train-local-lm "
                f"--config_files <your properties> --out {path}"
                if key == "allmrec_llm"
                else ""
            )
            raise ConfigError(
                f"option `{key}`: {what} '{path}' does not exist (a local path; nothing is downloaded){hint}"
            )
    if v["allmrec_llm_8bit"] and v["allmrec_llm"] is None:
        raise ConfigError("`allmrec_llm_8bit: true` needs an LM: set `allmrec_llm` to a local model directory")
    return ALLMRecOptions(
        cf_checkpoint=os.path.expanduser(v["allmrec_cf_checkpoint"]),
        cf_mode=v["allmrec_cf_mode"],
        title_field=v["allmrec_title_field"],
        finetune_text_encoder=v["allmrec_finetune_text_encoder"],
        latent_dim=v["allmrec_latent_dim"],
        recon_item_weight=float(v["allmrec_recon_item_weight"]),
        recon_text_weight=float(v["allmrec_recon_text_weight"]),
        stage1_epochs=v["allmrec_stage1_epochs"],
        stage1_batch_size=v["allmrec_stage1_batch_size"],
        stage1_lr=float(v["allmrec_stage1_lr"]),
        llm=None if v["allmrec_llm"] is None else os.path.expanduser(v["allmrec_llm"]),
        llm_dtype=v["allmrec_llm_dtype"],
        llm_8bit=v["allmrec_llm_8bit"],
        stage2_epochs=v["allmrec_stage2_epochs"],
        stage2_batch_size=v["allmrec_stage2_batch_size"],
        stage2_lr=float(v["allmrec_stage2_lr"]),
        history_len=v["allmrec_history_len"],
        domain=v["allmrec_domain"],
        eval=v["allmrec_eval"],
        repetition_penalty=float(v["allmrec_repetition_penalty"]),
        max_new_tokens=v["allmrec_max_new_tokens"],
        num_candidates=_candidate_count(config, with_llm=v["allmrec_llm"] is not None),
    )


def _model_of(config):
    """The plugin model a config is for (TFLLMER for a plain mapping without `model`)."""
    model = _lookup(config, "model")
    return model if model in PLUGIN_METHODS else "TFLLMER"


def validate_options(config):
    """Check every option the config's plugin model reads, once, and return the typed records."""
    model = _model_of(config)
    v = option_values(config, model)
    _cross_checks(v, model)
    _encoder_checks(config, v)
    if v.get("resume_from") is not None and not os.path.isfile(v["resume_from"]):
        raise ConfigError(
            f"option `resume_from`: checkpoint '{v['resume_from']}' does not exist; give the .pth file an "
            "interrupted run wrote under its `checkpoint_dir`"
        )
    return PluginOptions(
        source=_raw_values(config),
        text=_text_options(v),
        init=_init_options(v) if model == "TFLLMER" else None,
        graph=GraphOptions(window=v["graph_window"], weighting=v["graph_weighting"], topk=v["graph_topk"])
        if model == "TFLLMER"
        else None,
        norm=NormOptions(
            mode=v["item_norm"],
            scale=v["item_norm_scale"]
            if v["item_norm_scale"] in (None, NORM_SCALE_AUTO)
            else float(v["item_norm_scale"]),
            learnable=v["item_norm_learnable"],
        )
        if model != "ALLMRec"
        else None,
        llmemb=_llmemb_options(v) if model == "LLMEmb" else None,
        allmrec=_allmrec_options(config, v) if model == "ALLMRec" else None,
    )


def _text_options(v):
    return TextOptions(
        fields=v["text_fields"],
        template=v.get("text_template"),  # TFLLMER only
        missing_text_policy=v["missing_text_policy"],
        encoder=v["text_encoder"],
        encoder_type=v["text_encoder_type"],
        pooling=v["text_pooling"],
        normalize=v["text_normalize"],
        batch_size=v["text_batch_size"],
        max_length=v["text_max_length"],
        device=v["text_device"],
        dtype=v["text_dtype"],
        allow_download=v["text_allow_download"],
        cache_dir=v["embedding_cache_dir"],
        chunk_size=v["embedding_chunk_size"],
        precomputed=v["precomputed_embeddings"],
    )


def _init_options(v):
    return InitOptions(
        item_init=v["item_init"],
        rec_pca_alpha=float(v["rec_pca_alpha"]),
        formulation=v["rec_pca_formulation"],
        center=v["rec_pca_center"],
        row_normalize=v["rec_pca_row_normalize"],
        whiten=v["rec_pca_whiten"],
        solver=v["rec_pca_solver"],
        tol=float(v["rec_pca_tol"]),
        max_iter=v["rec_pca_max_iter"],
        device=v["rec_pca_device"],
        init_scale=None if v["init_scale"] is None else float(v["init_scale"]),
    )


def _llmemb_options(v):
    from recbole_tfllmer.llmemb.prompts import PromptFormat
    from recbole_tfllmer.llmemb.scft import SCFTRecipe

    targets = v["scft_lora_targets"]
    return LLMEmbOptions(
        scft=v["llmemb_scft"],
        prompt=PromptFormat(
            instruction=v["llmemb_instruction"],
            attr_template=v["llmemb_attr_template"],
            attr_sep=v["llmemb_attr_sep"],
            max_chars=v["llmemb_attr_max_chars"],
            names=tuple(sorted((v["llmemb_attr_names"] or {}).items())),
        ),
        recipe=SCFTRecipe(
            drop_ratio=float(v["scft_drop_ratio"]),
            resample_views=v["scft_resample_views"],
            loss=v["scft_loss"],
            tau_init=float(v["scft_tau_init"]),
            tau_learnable=v["scft_tau_learnable"],
            lora_r=v["scft_lora_r"],
            lora_alpha=float(v["scft_lora_alpha"]),
            lora_dropout=float(v["scft_lora_dropout"]),
            lora_targets=targets if isinstance(targets, str) else tuple(targets),
            lr=float(v["scft_lr"]),
            weight_decay=float(v["scft_weight_decay"]),
            grad_clip=float(v["scft_grad_clip"]),
            batch_size=v["scft_batch_size"],
            grad_accum=v["scft_grad_accum"],
            max_steps=v["scft_max_steps"],
            epochs=None if v["scft_epochs"] is None else float(v["scft_epochs"]),
            max_length=v["scft_max_length"] or v["text_max_length"],
            seed=v["scft_seed"],
        ),
        pca_dim=v["llmemb_pca_dim"],
        adapter_hidden=v["llmemb_adapter_hidden"],
        freeze_llm_table=v["llmemb_freeze_llm_table"],
        align_alpha=float(v["llmemb_align_alpha"]),
        align_tau=float(v["llmemb_align_tau"]),
        align_loss=v["llmemb_align_loss"],
        collab=None if v["llmemb_collab"] is None else os.path.expanduser(v["llmemb_collab"]),
    )


def plugin_options(config):
    """The records `build_config` attached to `config`; validated now for a Config built by hand,
    or one whose plugin options were changed after it was built (`config["graph_window"] = 3`)."""
    options = getattr(config, "plugin_options", None)
    if options is None or options.source != _raw_values(config):
        options = validate_options(config)
    return options


# -- generated artefacts ---------------------------------------------------------------------
def _yaml_value(value):
    if value is None:
        return "~"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.1e}"
    return str(value)


def _yaml_text(value):
    """A string as YAML reads it back: plain when that is safe, else double-quoted (JSON is YAML)."""
    import json

    import yaml

    plain = _yaml_value(value)
    try:
        same = yaml.safe_load(plain) == value
    except yaml.YAMLError:
        same = False
    return plain if same and "#" not in plain else json.dumps(value)


def package_yaml(model="TFLLMER"):
    """The text of properties/model/<model>.yaml (a test keeps each file equal to it)."""
    lines = [
        f"# {model} defaults. GENERATED from recbole_tfllmer/options.py (python -m recbole_tfllmer.options",
        f"# --yaml {model}): edit the declarations there, not this file. Loaded after the backbone's own RecBole",
        "# yaml and before the user's files / command line.",
    ]
    for group, title in GROUPS.items():
        chosen = [o for o in options_of(model) if o.group == group]
        if not chosen:
            continue
        lines += ["", f"# --- {title} " + "-" * max(3, 84 - len(title))]
        for o in chosen:
            value = o.default_for(model)
            text = _yaml_text(value) if isinstance(value, str) else _yaml_value(value)
            entry = f"{o.name}: {text}"
            lines.append((entry.ljust(38) if len(entry) < 38 else entry + " ") + f"# {o.help}")
    return "\n".join(lines) + "\n"


def markdown_table():
    """The README's table of every plugin option (a test keeps the README equal to it)."""
    lines = ["| option | read by | default | values | what it does |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        readers = "all" if o.methods == PLUGIN_METHODS else ", ".join(o.methods)
        default = f"`{doc_value(o.default)}`" + "".join(f" ({m}: `{doc_value(d)}`)" for m, d in o.method_defaults)
        if o.values:
            values = o.values
        elif o.kind == "choice":
            values = " \\| ".join(o.choices)
        elif o.kind in ("number", "int"):
            bound = "> 0" if o.positive else (f">= {o.minimum:g}" if o.minimum is not None else "any")
            if o.minimum is not None and o.maximum is not None:
                bound = f"in [{o.minimum:g}, {o.maximum:g}]"
            values = ("integer " if o.kind == "int" else "number ") + bound
        else:
            values = {"bool": "true \\| false", "str": "string"}.get(o.kind, "")
        if o.nullable:
            values += " or ~"
        lines.append(f"| `{o.name}` | {readers} | {default} | {values} | {o.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def doc_value(value):
    """A default as the docs and --help show it (YAML, quoted where needed)."""
    return (_yaml_text(value) if isinstance(value, str) else _yaml_value(value)).replace("|", "/")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--yaml"] and len(argv) <= 2:
        sys.stdout.write(package_yaml(*argv[1:]))
    elif argv == ["--markdown"]:
        sys.stdout.write(markdown_table())
    else:
        print("usage: python -m recbole_tfllmer.options --yaml [TFLLMER|LLMEmb] | --markdown", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
