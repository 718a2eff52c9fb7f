"""Each option is declared once (options.py): the package yaml, the README and validation follow."""

import re
from pathlib import Path

import pytest
import yaml

from recbole_tfllmer import options
from recbole_tfllmer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MODEL_YAMLS = REPO / "recbole_tfllmer" / "properties" / "model"


@pytest.mark.parametrize("model", options.PLUGIN_METHODS)
def test_package_yaml_is_generated_from_the_declarations(model):
    text = (MODEL_YAMLS / f"{model}.yaml").read_text(encoding="utf-8")
    assert text == options.package_yaml(model)
    # exactly the options the model reads, each with its default for that model (strings with
    # newlines or trailing blanks survive the quoting)
    assert yaml.safe_load(text) == {o.name: o.default_for(model) for o in options.options_of(model)}


def test_readme_option_table_is_generated_and_no_table_restates_a_default_differently():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", readme, flags=re.S)
    assert block and block.group(1) == options.markdown_table()
    # any other README table row that states a value for an option ("| `option` | `value` |" or a bare
    # number / ~) must state the declared default
    outside = readme.replace(block.group(0), "")
    stated = re.findall(r"^\| `([a-z_]+)` \| (`[^`|]*`|[0-9.e~+-]+) \|", outside, flags=re.M)
    for name, value in stated:
        if name in options.BY_NAME:
            assert yaml.safe_load(value.strip("`")) == options.BY_NAME[name].default, name


def test_every_declaration_is_complete_and_unique():
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    for o in options.OPTIONS:
        assert o.help and o.group in options.GROUPS and o.methods
        assert o.kind in ("choice", "number", "int", "bool", "str", "checked", "any")
        if o.kind == "choice":
            assert o.default in o.choices
        options.check_value(o, o.default)  # every default passes its own rule


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("item_init", "pcaa", "option `item_init` must be one of random, pca, rec_pca; got 'pcaa'"),
        ("text_batch_size", 0, "option `text_batch_size` must be >= 1, got 0"),
        ("text_max_length", 1.5, "option `text_max_length` must be an integer, got 1.5"),
        ("item_norm_scale", float("inf"), "option `item_norm_scale` must be auto, ~ (sqrt(d)) or a finite number > 0"),
        ("item_norm_scale", "big", "option `item_norm_scale` must be auto, ~ (sqrt(d)) or a finite number > 0"),
        ("item_norm_scale", 0, "(the norm r of every item vector, e.g. 8.0), got 0"),
        ("text_allow_download", "yes", "option `text_allow_download` must be true or false, got 'yes'"),
        ("init_scale", -1.0, "option `init_scale` must be > 0 (the mean row norm"),
    ],
)
def test_a_bad_value_names_the_option(name, value, message):
    with pytest.raises(ConfigError) as err:
        options.validate_options({**options.DEFAULTS, name: value})
    assert message in str(err.value)


def test_typed_records_carry_the_values_and_pca_runs_without_graph_weight():
    opts = options.validate_options(
        {**options.DEFAULTS, "item_init": "pca", "rec_pca_alpha": 0.7, "item_norm_scale": 3}
    )
    assert opts.init.alpha == 0.0 and opts.init.uses_llm_vectors
    assert opts.norm.scale_for(64, True) == opts.norm.scale_for(64, False) == 3.0  # a set r is kept
    assert opts.graph.window == 1 and opts.text.encoder == "all-MiniLM-L6-v2"
    defaults = options.validate_options(dict(options.DEFAULTS))
    assert defaults.init.alpha == 0.0 and defaults.init.formulation == "item_space"
    # auto: r = 1 behind a LayerNorm'd sequence vector (SASRec), sqrt(d) otherwise (GRU4Rec)
    assert defaults.norm.scale == "auto"
    assert defaults.norm.scale_for(64, True) == 1.0 and defaults.norm.scale_for(64, False) == 8.0
    unset = options.validate_options({**options.DEFAULTS, "item_norm_scale": None}).norm
    assert unset.scale_for(64, True) == 8.0 and unset.scale_for(100, False) == 10.0  # ~ = sqrt(d) on any backbone
    assert options.validate_options({**options.DEFAULTS, "rec_pca_alpha": 0.7}).init.alpha == 0.7


def test_the_pure_functions_own_checks_become_config_errors():
    with pytest.raises(ConfigError, match="option `graph_window`: graph_window must be a non-negative integer"):
        options.validate_options({**options.DEFAULTS, "graph_window": -2})
    with pytest.raises(ConfigError, match=r"option rec_pca_tol must be a number in \(0, 1\)"):
        options.validate_options({**options.DEFAULTS, "rec_pca_tol": 2.0})


def test_build_config_validates_once_and_attaches_the_records(ml_slice, tmp_path, in_tmp):
    from recbole_tfllmer.quick_start import build_config
    from tests.conftest import slice_config

    data_path, name = ml_slice
    config = build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path, item_norm_scale=4.0))
    assert config.plugin_options.norm.scale == 4.0


def test_a_config_changed_after_build_gets_fresh_records():
    class Config(dict):  # like RecBole's Config: item access, and build_config's attribute
        plugin_options = None

    config = Config(options.DEFAULTS)
    config.plugin_options = options.validate_options(config)
    assert options.plugin_options(config) is config.plugin_options  # unchanged: not validated again
    config["graph_window"] = 3
    assert options.plugin_options(config).graph.window == 3


def test_help_lists_every_plugin_option_with_its_default(capsys):
    from recbole_tfllmer.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for o in options.OPTIONS:
        assert f"--{o.name}=... (default {options.doc_value(o.default)})" in text


def test_rec_pca_device_auto_takes_the_runs_gpu_and_numpy_otherwise():
    import torch

    from recbole_tfllmer.options import InitOptions

    def init(device):
        return InitOptions("rec_pca", 0.35, "item_space", True, False, False, "auto", 1e-5, 100, None, device)

    assert init("auto").pca_device(torch.device("cpu")) is None
    assert init("auto").pca_device(torch.device("cuda:1")) == torch.device("cuda:1")
    assert init("auto").pca_device("cuda") == "cuda"
    assert init("numpy").pca_device(torch.device("cuda")) is None
    assert init("cpu").pca_device(torch.device("cuda")) == "cpu"
