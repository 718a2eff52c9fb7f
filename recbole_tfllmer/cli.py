"""Command line, mirroring RecBole's run_recbole.py, plus `--key=value` overrides.

run_recbole_tfllmer.py -m TFLLMER -d ml-100k --backbone=GRU4Rec --epochs=5
"""

import argparse
import logging
import os
import sys

from recbole_tfllmer.errors import ConfigError, TFLLMERError


def options_help():
    """The plugin's options for --help, from their declarations (options.py)."""
    from recbole_tfllmer.options import GROUPS, OPTIONS, doc_value

    lines = ["plugin options (--key=value; defaults from recbole_tfllmer/properties/model/<model>.yaml):"]
    for group, title in GROUPS.items():
        lines.append(f"  {title}:")
        for o in (o for o in OPTIONS if o.group == group):
            lines.append(f"    --{o.name}=... (default {doc_value(o.default)}): {o.help}")
    lines.append("any RecBole option works the same way, e.g. --epochs=20 --learning_rate=0.002")
    lines.append("export a trained model's item table: recbole-tfllmer export-item-table MODEL_FILE OUT.npy")
    lines.append(
        "encode item texts only (optionally one shard of N): recbole-tfllmer encode-items -d DATASET --shard I/N"
    )
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole_tfllmer.py",
        description="Train and evaluate a RecBole model, with TF-LLMER available as `-m TFLLMER`. "
        "Any other option is given as --key=value and overrides the config files.",
        epilog=options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        "-m",
        type=str,
        default=None,
        help="model name, e.g. TFLLMER, LLMEmb or any RecBole model (default: `model` in a config file)",
    )
    parser.add_argument(
        "--dataset", "-d", type=str, default=None, help="dataset name (default: `dataset` in a config file)"
    )
    parser.add_argument("--config_files", type=str, default=None, help="space-separated config files")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes")
    parser.add_argument("--ip", type=str, default="localhost", help="ip of the master node")
    parser.add_argument("--port", type=str, default="5678", help="port of the master node")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of jobs")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank offset of this group")
    return parser


def split_config_files(value):
    return value.strip().split(" ") if value else None


def export_item_table_main(argv):
    """`recbole-tfllmer export-item-table MODEL_FILE OUT.npy`: a trained model's scoring table,
    keyed by item token, for LLMEmb's `llmemb_collab` (or any bring-your-own use)."""
    parser = argparse.ArgumentParser(
        prog="recbole-tfllmer export-item-table",
        description="Write the item table a checkpoint scores with as OUT.npy + OUT.tokens.txt (rows keyed by item "
        "token), e.g. a RandInit SASRec for LLMEmb's `llmemb_collab`.",
    )
    parser.add_argument("model_file", help="a .pth checkpoint written by recbole-tfllmer")
    parser.add_argument("out", help="the .npy to write (its .tokens.txt is written beside it)")
    args = parser.parse_args(argv)
    from recbole_tfllmer.collab_tables import export_item_table
    from recbole_tfllmer.quick_start import load_data_and_model

    try:
        _, model, dataset, *_ = load_data_and_model(args.model_file)
        print(export_item_table(model, dataset, args.out))
    except TFLLMERError as err:
        report(f"recbole-tfllmer: error: {err}")
        return 2
    return 0


def parse_devices(text):
    """`--devices`: a list of torch device names; `gpus` means every visible CUDA device."""
    if text.strip() == "gpus":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--devices gpus: this machine has no CUDA device; name devices (e.g. cpu,cpu) instead")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise ConfigError(f"--devices must list torch devices (cuda:0,cuda:1) or say gpus, got {text!r}")
    return devices


def _encode_on_devices(argv, devices):
    """One `encode-items --shard I/N --text_device=D` worker per device, in parallel; returns when all
    succeeded (the caller then commits), or raises naming the shard that failed and its log."""
    import subprocess
    import tempfile

    base, skip = [], False
    for arg in argv:  # the same command without --devices (and its value)
        if skip or arg.startswith("--devices="):
            skip = False
            continue
        skip = arg == "--devices"
        if not skip:
            base.append(arg)
    n = len(devices)
    logs, workers = [], []
    for i, device in enumerate(devices):
        log = tempfile.NamedTemporaryFile("w+", prefix=f"encode-shard{i}of{n}-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "recbole_tfllmer.cli", "encode-items", *base, f"--shard={i}/{n}"]
        workers.append(subprocess.Popen([*command, f"--text_device={device}"], stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    codes = [worker.wait() for worker in workers]
    for log in logs:
        log.close()
    failed = [(i, code) for i, code in enumerate(codes) if code != 0]
    if failed:
        i, code = failed[0]
        tail = open(logs[i].name, encoding="utf-8", errors="replace").read().strip().splitlines()[-1:]
        raise ConfigError(
            f"--devices: shard {i}/{n} on {devices[i]} exited with status {code} ({tail[0] if tail else 'no output'}); "
            f"its log is {logs[i].name}. The chunks other shards finished are kept: run the command again"
        )
    for log in logs:
        os.unlink(log.name)
    print(f"{n} shards encoded on {', '.join(devices)}; committing")


def encode_items_main(argv):
    """`recbole-tfllmer encode-items -d DATASET [--config_files F] [--shard I/N] [--key=value ...]`:
    the data hook's encoding on its own, into the same content-hashed cache a training run reads.

    With `--shard I/N` it encodes only every N-th chunk (from chunk I) and does not commit, so N
    workers on one machine or many (a shared `embedding_cache_dir`; Ray tasks, a job array) split
    the catalogue; the next run without `--shard` finds every chunk and commits, encoding nothing.
    `--devices cuda:0,cuda:1` (or `gpus`) does that on one machine: one shard worker per device, then
    the commit."""
    parser = argparse.ArgumentParser(
        prog="recbole-tfllmer encode-items",
        description="Encode a dataset's item texts into the embedding cache, as a training run's data hook "
        "would; --shard I/N encodes one share of the chunks (no commit) for parallel workers.",
    )
    parser.add_argument("--model", "-m", default="TFLLMER", help="the plugin model whose options apply (TFLLMER)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: `dataset` in a config file)")
    parser.add_argument("--config_files", default=None, help="space-separated config files")
    parser.add_argument("--shard", default=None, help="I/N: encode chunks I, I+N, I+2N, ... and do not commit")
    parser.add_argument(
        "--devices",
        default=None,
        help="comma-separated torch devices (cuda:0,cuda:1) or `gpus` (every visible GPU): one shard worker per "
        "device, in parallel, then the commit",
    )
    args, overrides = parser.parse_known_args(argv)
    from recbole.utils import init_logger

    from recbole_tfllmer.data.dataset import TFLLMERDataset, needs_text_embeddings
    from recbole_tfllmer.quick_start import build_config
    from recbole_tfllmer.text.hook import compute_item_embeddings_with_info
    from recbole_tfllmer.text.store import check_shard

    try:
        if args.model != "TFLLMER":
            raise ConfigError(
                f"encode-items runs the data hook of TFLLMER (the text options are the same for every plugin model); "
                f"got -m {args.model}. LLMEmb's SCFT vectors need its fine-tuned encoder: run LLMEmb itself."
            )
        try:
            shard = check_shard(args.shard)
        except ValueError as err:
            raise ConfigError(f"--shard: {err}") from None
        if args.devices is not None and args.shard is not None:
            raise ConfigError("--devices runs its own shards (one per device): drop --shard")
        config = build_config(args.model, args.dataset, split_config_files(args.config_files), cmd_args=overrides)
        if not needs_text_embeddings(config):
            raise ConfigError("`item_init: random` uses no item text, so there is nothing to encode")
        if args.devices is not None:  # the options are checked once above, before any worker starts
            _encode_on_devices(argv, parse_devices(args.devices))
        init_logger(config)
        dataset = TFLLMERDataset(config, embed_items=False)
        result = compute_item_embeddings_with_info(config, dataset, shard=shard)
    except TFLLMERError as err:
        report(f"recbole-tfllmer: error: {err}")
        return 2
    if result is None:
        print(f"shard {shard[0]}/{shard[1]} encoded; run again without --shard (or train) to commit")
    else:
        info = result.info
        print(f"{info.get('cache_file')}: {info.get('n_encoded', 0)} items encoded, cache hit {info.get('cache_hit')}")
    return 0


def train_local_lm_main(argv):
    """`recbole-tfllmer train-local-lm --config_files F --out DIR`: a small OPT trained on the dataset's
    item text (allmrec/local_lm.py), for `allmrec_llm` where no pretrained LLM can be loaded."""
    from recbole_tfllmer.allmrec.local_lm import LocalLMRecipe, catalogue_lines, train_local_lm

    recipe = LocalLMRecipe()
    parser = argparse.ArgumentParser(
        prog="recbole-tfllmer train-local-lm",
        description="Train a small causal LM on a dataset's item text (titles and text lines, no interactions) "
        "and save it where `allmrec_llm` can load it.",
    )
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: `dataset` in a config file)")
    parser.add_argument("--config_files", default=None, help="space-separated config files")
    parser.add_argument("--out", required=True, help="the model directory to write (replaced when complete)")
    parser.add_argument("--title-field", default="title", help="the .item field A-LLMRec's prompts show")
    for name in ("hidden", "layers", "heads", "epochs", "batch_size", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(recipe, name))
    parser.add_argument("--learning-rate", type=float, default=recipe.learning_rate)
    args, overrides = parser.parse_known_args(argv)
    from recbole_tfllmer.quick_start import build_config

    try:
        config = build_config("TFLLMER", args.dataset, split_config_files(args.config_files), cmd_args=overrides)
        lines = catalogue_lines(config, args.title_field)
    except (TFLLMERError, ValueError) as err:
        report(f"recbole-tfllmer: error: {err}")
        return 2
    fields = {
        k: getattr(args, k) for k in ("hidden", "layers", "heads", "epochs", "batch_size", "seed", "learning_rate")
    }
    result = train_local_lm(lines, args.out, LocalLMRecipe(**fields))
    print(
        f"{os.path.abspath(os.path.expanduser(args.out))}: OPT with {result['parameters']} parameters, {result['lines']} "
        f"lines, final next-token loss {result['epoch_losses'][-1]:.4f}, {result['seconds']:.0f} s"
    )
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-item-table"]:
        return export_item_table_main(argv[1:])
    if argv[:1] == ["encode-items"]:
        return encode_items_main(argv[1:])
    if argv[:1] == ["train-local-lm"]:
        return train_local_lm_main(argv[1:])
    args, overrides = build_parser().parse_known_args(argv)
    from recbole_tfllmer.quick_start import run

    try:
        run(
            args.model,
            args.dataset,
            config_file_list=split_config_files(args.config_files),
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
            cmd_args=overrides,
        )
    except TFLLMERError as err:
        report(f"recbole-tfllmer: error: {err}")
        return 2
    except KeyboardInterrupt:
        # the best model so far is in its checkpoint (saved after each new best epoch)
        report(
            "recbole-tfllmer: interrupted (Ctrl-C); the best model so far is in the run's checkpoint under "
            "`checkpoint_dir` (load it with recbole_tfllmer.load_data_and_model)"
        )
        return 130
    return 0


def report(message):
    """One line on stderr, and the same line in the run's log file when RecBole's logger has one."""
    print(message, file=sys.stderr)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("recbole_tfllmer", logging.ERROR, __file__, 0, message, None, None))
            handler.flush()


if __name__ == "__main__":
    sys.exit(main())
