"""Command line, mirroring RecBole's run_recbole.py, plus `--key=value` overrides.

run_recbole_tfllmer.py -m TFLLMER -d ml-100k --backbone=GRU4Rec --epochs=5
"""

import argparse
import logging
import sys

from recbole_tfllmer.errors import TFLLMERError


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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-item-table"]:
        return export_item_table_main(argv[1:])
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
