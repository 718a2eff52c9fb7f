"""Replace the text between two marker comments of README.md (the tables benchmarks generate)."""

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_block(begin, end, text, readme=README):
    content = readme.read_text(encoding="utf-8")
    start = content.index(begin) + len(begin)
    readme.write_text(content[:start] + "\n" + text + content[content.index(end) :], encoding="utf-8")
