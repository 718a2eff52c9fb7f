"""README tables the benchmarks generate: replace the text between two marker comments, read a
board's summary csv, and the command line shared by the table scripts (print, or --readme)."""

import argparse
import csv
import math
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def write_block(begin, end, text, readme=README):
    content = readme.read_text(encoding="utf-8")
    start = content.index(begin) + len(begin)
    readme.write_text(content[:start] + "\n" + text + content[content.index(end) :], encoding="utf-8")


def read_csv(path):
    """The rows of a summary csv (results/<board>/leaderboard.csv, paired.csv, ...), [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def mean_std(mean, std):
    """ "0.0512 ± 0.0021", or the mean alone where one seed leaves no spread."""
    mean, std = float(mean), float(std)
    return f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def table_main(doc, table, marks):
    """Print `table()`; with --readme also write it between the README's `marks`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the table between the README's markers")
    args = parser.parse_args()
    text = table()
    print(text, end="")
    if args.readme:
        write_block(*marks, text)
