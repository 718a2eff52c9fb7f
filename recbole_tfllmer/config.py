"""RecBole Config that knows the plugin's models.

Layering, lowest priority first (RecBole's own order, with the plugin slotted in):
RecBole overall.yaml -> the *backbone's* model yaml (e.g. BERT4Rec.yaml with its transform)
-> RecBole's dataset/sequential presets -> the plugin's model yaml (TFLLMER.yaml)
-> the user's config files -> config_dict -> command line.
"""

import os

import yaml
from recbole.config import Config

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.options import default_of
from recbole_tfllmer.utils import get_model, is_plugin_model

PLUGIN_PROPERTIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties")


def plugin_model_yaml(model_name):
    return os.path.join(PLUGIN_PROPERTIES, "model", f"{model_name}.yaml")


class TFLLMERConfig(Config):
    """RecBole's Config, plus: plugin model lookup, the backbone's yaml under the wrapper's,
    and an explicit command line.

    `cmd_args` is the list of `--key=value` strings to apply last; None (the default for
    library use) reads nothing from sys.argv, so calling `run()` from a test or notebook
    never picks up the host program's flags.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or [])
        self.backbone_class = None
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    # -- config files -----------------------------------------------------------------
    def _load_config_files(self, file_list):
        """RecBole's reader (later files override earlier ones), with a missing, unreadable or
        malformed file named in one line; each file is read once."""
        file_config_dict = {}
        for file in file_list or []:
            if not os.path.isfile(file):
                raise ConfigError(f"config file '{file}' (--config_files / config_file_list) does not exist")
            try:
                with open(file, encoding="utf-8") as f:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ConfigError(f"config file '{file}' is not valid YAML{where}: {problem}") from None
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"config file '{file}' cannot be read ({err})") from None
            if content is not None and not isinstance(content, dict):
                raise ConfigError(f"config file '{file}' must hold `key: value` lines, not a {type(content).__name__}")
            file_config_dict.update(content or {})
        return file_config_dict

    # -- command line -----------------------------------------------------------------
    def _load_cmd_line(self):
        cmd_config_dict = {}
        for arg in self._cmd_args:
            if not arg.startswith("--") or "=" not in arg:
                raise ConfigError(f"command-line argument {arg!r} is not of the form --key=value")
            key, value = arg[2:].split("=", 1)
            if key in cmd_config_dict and cmd_config_dict[key] != value:
                raise ConfigError(f"option --{key} is given twice with different values")
            cmd_config_dict[key] = value
        return self._convert_config_dict(cmd_config_dict)

    # -- model / backbone resolution --------------------------------------------------
    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("no model given: pass -m/--model, or set `model` in a config file")
        model_class = get_model(model) if isinstance(model, str) else model
        return super()._get_model_and_dataset(model_class, dataset)

    def _resolve_backbone(self, model_name):
        if not is_plugin_model(model_name):
            return None
        from recbole_tfllmer.backbones import resolve_backbone

        name = self.external_config_dict.get("backbone") or default_of("backbone")
        return resolve_backbone(name)

    def _load_internal_config_dict(self, model, model_class, dataset):
        self.backbone_class = self._resolve_backbone(model)
        if self.backbone_class is None:
            super()._load_internal_config_dict(model, model_class, dataset)
            return
        # The backbone's own yaml and RecBole's presets, exactly as for `-m <backbone>` ...
        super()._load_internal_config_dict(self.backbone_class.__name__, self.backbone_class, dataset)
        # ... then the wrapper's defaults on top.
        self._update_internal_config_dict(plugin_model_yaml(model))
        self.internal_config_dict["backbone"] = self.backbone_class.__name__

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        if self.backbone_class is not None and final.get("encoding") in (None, "utf-8", "utf8", "UTF-8"):
            # Spreadsheet exports start the file with a byte-order mark, which RecBole would read
            # into the first header field ("\ufeffuser_id:token" is no field it knows): utf-8-sig
            # reads UTF-8 files with and without one identically.
            final["encoding"] = "utf-8-sig"
        if self.backbone_class is not None and "train_neg_sample_args" not in self.external_config_dict:
            # RecBole's own rule, per backbone: a CE loss trains on all items and must sample no
            # negatives (RecBole refuses CE with sampling), a pairwise (BPR) loss keeps RecBole's
            # default sampling. So every config RecBole accepts for the backbone works as it is.
            from recbole_tfllmer.backbones import backbone_spec, needs_sampled_negatives

            if not needs_sampled_negatives(backbone_spec(self.backbone_class.__name__), final):
                final["train_neg_sample_args"] = None
        return final

    def _init_device(self):
        """RecBole's device set-up, plus distributed training on CPUs: RecBole's DDP path always
        uses NCCL and one GPU per process, so a worker of `--nproc=N` on a machine without CUDA
        (or with `use_gpu: false`) joins a gloo process group on the CPU instead."""
        import torch

        config = self.final_config_dict
        if "local_rank" not in config or (config.get("use_gpu", True) and torch.cuda.is_available()):
            return super()._init_device()
        config["gpu_id"] = (
            ",".join(map(str, config["gpu_id"])) if isinstance(config["gpu_id"], tuple) else str(config["gpu_id"])
        )
        torch.distributed.init_process_group(
            backend="gloo",
            rank=config["local_rank"] + config["offset"],
            world_size=config["world_size"],
            init_method=f"tcp://{config['ip']}:{config['port']}",
        )
        config["device"] = torch.device("cpu")
        config["single_spec"] = False
        if config["local_rank"] != 0:
            config["state"] = "error"
            config["show_progress"] = False
            config["verbose"] = False

    def _set_default_parameters(self):
        # RecBole derives MODEL_INPUT_TYPE from the model class (SINE and TransRec are
        # pairwise): the wrapper trains exactly as its backbone, so ask the backbone.
        wrapper_class = self.model_class
        if self.backbone_class is not None:
            self.model_class = self.backbone_class
        try:
            super()._set_default_parameters()
        finally:
            self.model_class = wrapper_class
        if self.backbone_class is not None:
            self.final_config_dict["backbone"] = self.backbone_class.__name__

    # The typed option records of options.validate_options, attached by build_config.
    plugin_options = None
