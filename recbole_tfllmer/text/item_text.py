"""Raw item text from a RecBole atomic `.item` file, and the text template.

The file is parsed with exactly the pandas settings RecBole's `Dataset._load_feat` uses
(delimiter, encoding, python engine, CSV quoting), but every column is kept as the raw
string (`dtype=str`, `keep_default_na=False`): RecBole would split `token_seq` fields and
turn "NA" into NaN, and the text we embed must be the text the user wrote.
"""

import csv
import os
import string

import pandas as pd

from recbole_tfllmer.errors import ConfigError, ItemFileNotFoundError, ItemTextError

TEXT_TYPES = ("token", "token_seq")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
TEMPLATE_SEPARATOR = ". "


def read_header(item_file, field_separator="\t", encoding="utf-8"):
    """The header of an atomic file as a list of (name, type) pairs.

    A UTF-8 byte-order mark is dropped from the first name (RecBole would keep it and then
    fail to find the id field, with a much less helpful message).
    """
    if not os.path.isfile(item_file):
        raise ItemFileNotFoundError(
            f"Item file '{item_file}' does not exist. Check `data_path` and `dataset`, or set "
            f"`precomputed_embeddings` to use your own item vectors."
        )
    try:
        with open(item_file, "r", encoding=encoding, newline="") as f:
            head = f.readline()
    except UnicodeDecodeError as e:
        raise decode_error(item_file, encoding, e) from None
    head = head.rstrip("\r\n").lstrip("\ufeff")
    if not head:
        raise ItemTextError(f"Item file '{item_file}' is empty: expected a header line of `name:type` fields.")
    pairs = []
    for col in head.split(field_separator):
        name, sep, ftype = col.partition(":")
        if not sep or not name or ftype not in RECBOLE_TYPES:
            raise ItemTextError(
                f"Item file '{item_file}': header entry {col!r} is not `name:type` with a RecBole type ({', '.join(RECBOLE_TYPES)}). Is `field_separator` "
                f"({field_separator!r}) the separator this file uses?"
            )
        pairs.append((name, ftype))
    return pairs


def default_fields(header, id_field="item_id"):
    """Every `token`/`token_seq` field except the id: what `text_fields: ~` embeds.

    `header` is a list of (name, type) pairs or of "name:type" strings. Floats (price, sales
    rank) are left out on purpose: they are not text and would make every item look alike.
    """
    out = []
    for col in header:
        name, ftype = col if isinstance(col, (tuple, list)) else col.split(":", 1)
        if name != id_field and ftype in TEXT_TYPES:
            out.append(name)
    return out


def read_item_table(item_file, id_field, fields, field_separator="\t", seq_separator=" ", encoding="utf-8"):
    """Map item token -> {field: raw string} for `fields` (None = `default_fields`).

    token_seq values are RecBole tokens joined by `seq_separator`, as RecBole splits them; with
    the default " " they are returned as they are (the spaces are part of the readable text),
    with another separator (e.g. "|") the tokens are rejoined with spaces.
    """
    header = read_header(item_file, field_separator, encoding)
    names = [n for n, _ in header]
    if id_field not in names:
        raise ItemTextError(
            f"Item file '{item_file}' has no id field '{id_field}' (fields: {', '.join(names)}). "
            f"Set ITEM_ID_FIELD to the item id column."
        )
    if fields is None:
        fields = default_fields(header, id_field)
    fields = list(fields)
    unknown = [f for f in fields if f not in names]
    if unknown:
        raise ItemTextError(
            f"Item file '{item_file}' has no field(s) {', '.join(repr(f) for f in unknown)} named in "
            f"`text_fields`/`text_template`. Available fields: {', '.join(names)}."
        )

    try:
        df = pd.read_csv(
            item_file,
            delimiter=field_separator,
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
            engine="python",
        )
    except UnicodeDecodeError as e:
        raise decode_error(item_file, encoding, e) from None
    except pd.errors.ParserError as e:
        raise garbled_file_error(item_file, field_separator, encoding, len(header), str(e).strip()) from None

    if len(df.columns) != len(header) or not isinstance(df.index, pd.RangeIndex) or df.isna().to_numpy().any():
        raise garbled_file_error(
            item_file, field_separator, encoding, len(header), "some rows have the wrong number of fields"
        )
    df.columns = names

    tokens = df[id_field].tolist()
    dup = df[id_field][df[id_field].duplicated()].unique().tolist()
    if dup:
        raise ItemTextError(
            f"Item file '{item_file}' lists {len(dup)} item token(s) in field '{id_field}' more than once, "
            f"e.g. {', '.join(repr(t) for t in dup[:5])}. Keep one row per item."
        )
    types = dict(header)
    if seq_separator not in (None, " "):
        for f in fields:
            if types[f] == "token_seq":
                df[f] = df[f].map(lambda v: " ".join(t for t in v.split(seq_separator) if t.strip()))
    columns = {f: df[f].tolist() for f in fields}
    return {tok: {f: columns[f][i] for f in fields} for i, tok in enumerate(tokens)}


def template_fields(template):
    """Field names a `text_template` refers to, in order, each once; ConfigError on bad syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"`text_template` {template!r} is not a valid format string: {e}.") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise ConfigError(f"`text_template` {template!r}: use named fields such as {{title}}; got {{{name}}}.")
        if spec or conv:
            raise ConfigError(
                f"`text_template` {template!r}: format specs/conversions are not supported ({{{name}...}}); "
                f"values are inserted as raw text."
            )
        if name not in names:
            names.append(name)
    return names


def _render_segment(segment, values):
    parts = []
    for literal, name, _, _ in string.Formatter().parse(segment):
        parts.append(literal)
        if name is not None:
            parts.append(values[name])
    return " ".join("".join(parts).split())


def build_item_text(values, fields, template=None):
    """One item's text, or None when every field used is empty.

    With a template, the template is split into segments at every ". " (outside braces);
    a segment whose fields are all empty is dropped, the rest are joined with ". ". So
    "Title: {title}. Brand: {brand}" gives "Title: X" for an item without brand, never
    "Title: X. Brand: ". Within a kept segment an empty field renders as "" (whitespace is
    collapsed), so put fields that can be missing independently in separate segments.
    Without a template: "field: value" for each non-empty field, joined by ". ".
    Values are stripped; a value of only whitespace counts as empty.
    """
    fields = list(fields)
    clean = {k: ("" if v is None else str(v).strip()) for k, v in values.items()}
    if template is None:
        parts = [f"{f}: {clean[f]}" for f in fields if clean.get(f)]
        return TEMPLATE_SEPARATOR.join(parts) if parts else None

    names = template_fields(template)
    unknown = [n for n in names if n not in clean]
    if unknown:
        raise ConfigError(
            f"`text_template` names unknown field(s) {', '.join(repr(n) for n in unknown)}; "
            f"available: {', '.join(sorted(clean)) or '(none)'}. Fix `text_template` or `text_fields`."
        )
    if not any(clean[n] for n in names):
        return None
    kept = []
    for seg in _split_template(template):
        seg_names = [n for _, n, _, _ in string.Formatter().parse(seg) if n is not None]
        if seg_names and not any(clean[n] for n in seg_names):
            continue
        text = _render_segment(seg, clean)
        if text:
            kept.append(text)
    return TEMPLATE_SEPARATOR.join(kept) if kept else None


def _split_template(template):
    """Split at ". " outside {braces}; '{{'/'}}' escapes are literal and never split."""
    segments, buf, depth, i = [], [], 0, 0
    while i < len(template):
        two = template[i : i + 2]
        if depth == 0 and two in ("{{", "}}"):
            buf.append(two)
            i += 2
            continue
        ch = template[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and two == TEMPLATE_SEPARATOR:
            segments.append("".join(buf))
            buf = []
            i += 2
            continue
        buf.append(ch)
        i += 1
    segments.append("".join(buf))
    return [s for s in segments if s.strip()]


def item_texts_from_file(
    item_file, id_field, fields=None, template=None, field_separator="\t", seq_separator=" ", encoding="utf-8"
):
    """token -> text (or None) for every row of the file, plus the fields used.

    With a template and no explicit fields, the fields are the template's; the template
    is checked against the file's header first so the error names `text_template`.
    """
    if template is not None:
        names = template_fields(template)
        header_names = [n for n, _ in read_header(item_file, field_separator, encoding)]
        unknown = [n for n in names if n not in header_names]
        if unknown:
            raise ConfigError(
                f"`text_template` names field(s) {', '.join(repr(n) for n in unknown)} that item file "
                f"'{item_file}' does not have. Available fields: {', '.join(header_names)}."
            )
        if fields is None:
            fields = names
        else:
            fields = list(fields) + [n for n in names if n not in fields]
    table = read_item_table(item_file, id_field, fields, field_separator, seq_separator, encoding)
    if fields is None:
        fields = default_fields(read_header(item_file, field_separator, encoding), id_field)
    texts = {tok: build_item_text(vals, fields, template) for tok, vals in table.items()}
    return texts, list(fields)


def _first_bad_line(item_file, field_separator, encoding, n_fields):
    """(line number, field count, physical lines the record spans) of the first data row
    with the wrong field count, or None. Parsed with the CSV quoting pandas uses, so a
    field that opens a double quote and never closes it shows up as one record running
    over many lines."""
    with open(item_file, "r", encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=field_separator, quotechar='"', doublequote=True)
        start = 1
        try:
            for i, row in enumerate(reader):
                if i > 0 and row and len(row) != n_fields:
                    return start, len(row), reader.line_num - start + 1
                start = reader.line_num + 1
        except csv.Error:
            return start, None, reader.line_num - start + 1
    return None


def _file_kind(path):
    return "Interaction file" if str(path).endswith(".inter") else "Item file"


def garbled_file_error(path, field_separator, encoding, n_fields, fallback, error_class=None):
    """ItemTextError (or `error_class`) naming the first malformed line of an atomic file.

    Wrong field counts and unbalanced double quotes (a field that starts with `"` and is
    never closed swallows the following lines) are told apart, each with its fix.
    """
    error_class = error_class or ItemTextError
    kind = _file_kind(path)
    try:
        bad = _first_bad_line(path, field_separator, encoding, n_fields)
    except (OSError, UnicodeDecodeError):
        bad = None
    if bad is not None and bad[2] > 1:
        return error_class(
            f"{kind} '{path}' is garbled: line {bad[0]} opens a double quote (\") that is not closed on that "
            f"line, so the field runs on over {bad[2]} lines. Close or remove the quote, or write a literal "
            f'quote as "" inside a quoted field.'
        )
    where = f"line {bad[0]} has {bad[1]} fields" if bad is not None and bad[1] is not None else fallback
    return error_class(
        f"{kind} '{path}' is garbled: the header has {n_fields} fields but {where}. "
        f"Check `field_separator` ({field_separator!r}) and quote fields that contain it."
    )


def decode_error(path, encoding, err, error_class=None):
    """ItemTextError (or `error_class`) naming the first line that is not valid `encoding`."""
    error_class = error_class or ItemTextError
    if str(encoding).lower().replace("_", "-") == "utf-8-sig":  # how the plugin opens UTF-8 (BOM or not)
        encoding = "utf-8"
    line = None
    try:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError:
                    line = i
                    break
    except OSError:
        pass
    where = f"line {line}" if line else f"byte {err.start}"
    return error_class(
        f"{_file_kind(path)} '{path}' cannot be decoded as {encoding!r} ({where}: {err.reason}). "
        f"Set the `encoding` option to the file's encoding (e.g. encoding: latin-1)."
    )
