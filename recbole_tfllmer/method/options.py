"""Validation of TF-LLMER's options, run when the Config is built (before any data is read
or encoded), so a bad option costs seconds, not an encoding of the whole catalogue."""

import math

from recbole_tfllmer.errors import ConfigError

ITEM_INIT_CHOICES = ("random", "pca", "rec_pca")
ITEM_NORM_CHOICES = ("always", "init", "none")
MISSING_TEXT_POLICIES = ("error", "zero", "mean")


def _number(config, key, minimum=None, strictly_positive=False, allow_none=False, hint=""):
    value = config[key]
    if value is None and allow_none:
        return None
    hint = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ConfigError(f"option `{key}` must be a finite number{hint}, got {value!r}")
    if strictly_positive and value <= 0:
        raise ConfigError(f"option `{key}` must be > 0{hint}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"option `{key}` must be >= {minimum:g}{hint}, got {value!r}")
    return float(value)


def _choice(config, key, choices):
    if config[key] not in choices:
        raise ConfigError(f"option `{key}` must be one of {', '.join(choices)}; got {config[key]!r}")


def _graph_options(config):
    """graph_window / graph_weighting / graph_topk, with the graph builder's own rules."""
    from recbole_tfllmer.method.cooccurrence import check_graph_topk, check_graph_weighting, check_graph_window

    for key, check in (("graph_window", check_graph_window), ("graph_weighting", check_graph_weighting),
                       ("graph_topk", check_graph_topk)):
        try:
            check(config[key])
        except ValueError as err:
            raise ConfigError(f"option `{key}`: {err}") from None


def _rec_pca_solver_options(config):
    """rec_pca_solver / rec_pca_tol / rec_pca_max_iter, and the iterative solver's lambda limit."""
    from recbole_tfllmer.method.rec_pca import ITERATIVE_MAX_LAMBDA, SOLVERS, check_solver_options

    _choice(config, "rec_pca_solver", SOLVERS)
    try:  # the solver's own checks, so the two can never disagree
        check_solver_options(config["rec_pca_solver"], config["rec_pca_tol"], config["rec_pca_max_iter"])
    except ValueError as err:
        raise ConfigError(f"option {err}") from None
    lam = config["rec_pca_lambda"]
    if config["rec_pca_solver"] == "iterative" and config["item_init"] == "rec_pca" and lam > ITERATIVE_MAX_LAMBDA:
        raise ConfigError(
            f"conflicting options: `rec_pca_solver: iterative` needs `rec_pca_lambda` <= {ITERATIVE_MAX_LAMBDA} "
            f"(above it the Rec-PCA matrix can be indefinite), got {lam!r}. Set `rec_pca_solver: exact` "
            f"(or auto), or `rec_pca_lambda` <= {ITERATIVE_MAX_LAMBDA}."
        )


def _text_encoder_option(config):
    """A text encoder that is neither bundled nor a local path (downloads off) fails here,
    before RecBole reads the dataset, not after."""
    if config["item_init"] == "random" or config["precomputed_embeddings"]:
        return
    from recbole_tfllmer.text.encoders import config_value, resolve_model_path

    resolve_model_path(config_value(config, "text_encoder", "all-MiniLM-L6-v2"),
                       bool(config_value(config, "text_allow_download", False)))


def validate_tfllmer_options(config):
    """Raise ConfigError naming the option at fault; return nothing when all is well."""
    _choice(config, "item_init", ITEM_INIT_CHOICES)
    _choice(config, "item_norm", ITEM_NORM_CHOICES)
    _choice(config, "missing_text_policy", MISSING_TEXT_POLICIES)
    _number(config, "rec_pca_lambda", minimum=0.0,
            hint="the weight of the graph term: 0 = plain PCA, 0.5 is the default")
    _rec_pca_solver_options(config)
    _number(config, "item_norm_scale", strictly_positive=True, hint="the norm r of every item vector, e.g. 1.0")
    _number(config, "init_scale", strictly_positive=True, allow_none=True,
            hint="the mean row norm of the initial table, or ~ to keep the projection's")
    if config["item_norm_learnable"] and config["item_norm"] != "always":
        raise ConfigError(
            "conflicting options: `item_norm_learnable: true` learns the norm of the item vectors, "
            f"which needs `item_norm: always` (got `item_norm: {config['item_norm']}`). Set "
            "`item_norm: always`, or `item_norm_learnable: false`."
        )
    _graph_options(config)
    _text_encoder_option(config)
