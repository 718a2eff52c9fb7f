"""Item text: RecBole-exact parsing of .item files, template assembly, and clear errors."""

import os

import pytest

from recbole_tfllmer.errors import ConfigError, ItemTextError, TFLLMERError
from recbole_tfllmer.text.item_text import (
    build_item_text,
    default_fields,
    item_texts_from_file,
    read_header,
    read_item_table,
    template_fields,
)

HEADER = "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float\n"
AMAZON_ITEM = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "Amazon_Beauty", "Amazon_Beauty.item"
)


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


@pytest.fixture
def item_file(tmp_path):
    rows = [
        'A1\t"The ""Best"" Lipstick\t(red)"\tBeauty | Makeup | Lips\tAcme\t9.99',
        "A2\tPlain Soap\t\t\t1.5",  # no categories, no brand
        "A3\t\tBeauty | Skin Care\tNA\t",  # no title; brand literally "NA"
        "A4\t \t\t\t",  # nothing but whitespace
        'A5\t5" Mirror\tBeauty\tX\t2',  # a quote inside a field is literal
    ]
    return write(tmp_path / "b.item", HEADER + "\n".join(rows) + "\n")


def test_reads_raw_strings_like_recbole(item_file):
    table = read_item_table(item_file, "item_id", ["title", "categories", "brand"])
    assert list(table) == ["A1", "A2", "A3", "A4", "A5"]
    assert table["A1"]["title"] == 'The "Best" Lipstick\t(red)'  # quotes unescaped, tab kept
    assert table["A1"]["categories"] == "Beauty | Makeup | Lips"
    assert table["A2"] == {"title": "Plain Soap", "categories": "", "brand": ""}
    assert table["A3"]["brand"] == "NA"  # not turned into NaN
    assert table["A5"]["title"] == '5" Mirror'


def test_default_fields_skip_id_and_floats(item_file):
    header = read_header(item_file)
    assert default_fields(header, "item_id") == ["title", "categories", "brand"]
    assert default_fields(["item_id:token", "t:token_seq", "p:float"], "item_id") == ["t"]
    table = read_item_table(item_file, "item_id", None)
    assert set(table["A1"]) == {"title", "categories", "brand"}


def test_template_drops_empty_segments(item_file):
    table = read_item_table(item_file, "item_id", ["title", "categories", "brand"])
    tpl = "Title: {title}. Categories: {categories}. Brand: {brand}"
    f = ["title", "categories", "brand"]
    assert build_item_text(table["A1"], f, tpl) == (
        'Title: The "Best" Lipstick (red). Categories: Beauty | Makeup | Lips. Brand: Acme'
    )
    assert build_item_text(table["A2"], f, tpl) == "Title: Plain Soap"
    assert build_item_text(table["A3"], f, tpl) == "Categories: Beauty | Skin Care. Brand: NA"
    assert build_item_text(table["A4"], f, tpl) is None  # whitespace only = empty
    # literal-only segments stay; a partly empty multi-field segment keeps its non-empty part
    assert build_item_text({"t": "X", "b": ""}, ["t", "b"], "Product. {t} by {b}. End") == "Product. X by. End"
    assert build_item_text({"t": "X", "b": ""}, ["t", "b"], "{t}. {b}") == "X"
    # a ". " inside a value never splits anything
    assert build_item_text({"t": "Dr. Who", "b": "BBC"}, ["t", "b"], "{t}. By {b}") == "Dr. Who. By BBC"


def test_no_template_field_value_pairs(item_file):
    table = read_item_table(item_file, "item_id", ["title", "categories", "brand"])
    f = ["title", "categories", "brand"]
    assert build_item_text(table["A2"], f) == "title: Plain Soap"
    assert build_item_text(table["A3"], f) == "categories: Beauty | Skin Care. brand: NA"
    assert build_item_text(table["A4"], f) is None


def test_template_errors_name_the_option(item_file):
    with pytest.raises(ConfigError, match="text_template.*'colour'"):
        build_item_text({"title": "x"}, ["title"], "Title: {title}. Colour: {colour}")
    with pytest.raises(ConfigError, match="text_template"):
        template_fields("Title: {title")
    with pytest.raises(ConfigError, match="text_template"):
        template_fields("Price {price:.2f}")
    with pytest.raises(ConfigError, match=r"text_template.*'colour'.*Available fields: item_id, title"):
        item_texts_from_file(item_file, "item_id", template="{title} {colour}")
    texts, fields = item_texts_from_file(item_file, "item_id", template="Title: {title}. Brand: {brand}")
    assert fields == ["title", "brand"] and texts["A2"] == "Title: Plain Soap"


def test_missing_file_and_field(tmp_path, item_file):
    missing = str(tmp_path / "nope.item")
    with pytest.raises(FileNotFoundError, match="nope.item") as e:
        read_item_table(missing, "item_id", None)
    assert isinstance(e.value, ItemTextError) and isinstance(e.value, TFLLMERError)
    with pytest.raises(ItemTextError, match=r"b\.item.*'colour'.*Available fields: item_id, title, categories"):
        read_item_table(item_file, "item_id", ["title", "colour"])
    with pytest.raises(ItemTextError, match="no id field 'iid'"):
        read_item_table(item_file, "iid", None)


def test_garbled_lines_name_the_line(tmp_path):
    too_many = write(tmp_path / "m.item", HEADER + "A1\tt\tc\tb\t1\n" + "A2\tt\tc\tb\t1\textra\n")
    with pytest.raises(ItemTextError, match=r"m\.item.*line 3 has 6 fields"):
        read_item_table(too_many, "item_id", None)
    too_few = write(tmp_path / "f.item", HEADER + "A1\tt\tc\tb\t1\n" + 'A2\t"multi\nline"\tc\tb\t1\n' + "A3\tt\n")
    with pytest.raises(ItemTextError, match=r"f\.item.*line 5 has 2 fields"):
        read_item_table(too_few, "item_id", None)
    wrong_sep = write(tmp_path / "s.item", HEADER.replace("\t", ",") + "A1,t,c,b,1\n")
    with pytest.raises(ItemTextError, match="field_separator"):
        read_item_table(wrong_sep, "item_id", None)


def test_undecodable_bytes_name_encoding(tmp_path):
    path = write(tmp_path / "e.item", HEADER.encode() + "A1\tCr\u00e8me\tc\tb\t1\n".encode("latin-1"))
    with pytest.raises(ItemTextError, match=r"e\.item.*'utf-8'.*line 2.*`encoding`"):
        read_item_table(path, "item_id", None)
    assert read_item_table(path, "item_id", ["title"], encoding="latin-1")["A1"]["title"] == "Cr\u00e8me"


def test_duplicate_tokens(tmp_path):
    path = write(tmp_path / "d.item", HEADER + "A1\tt\tc\tb\t1\nA2\tt\tc\tb\t1\nA1\tu\tc\tb\t1\n")
    with pytest.raises(ItemTextError, match=r"d\.item.*1 item token.*'A1'"):
        read_item_table(path, "item_id", None)


@pytest.mark.skipif(not os.path.isfile(AMAZON_ITEM), reason="shared Amazon_Beauty not present")
def test_amazon_beauty_file():
    table = read_item_table(AMAZON_ITEM, "item_id", ["title", "categories", "brand"])
    assert len(table) == 12101
    quoted = [v["title"] for v in table.values() if '"' in v["title"]]
    assert quoted and not any(t.startswith('"') and t.endswith('"') for t in quoted)
    assert sum(1 for v in table.values() if v["title"].strip()) == 12094  # as the dataset README says


def test_seq_separator_splits_token_seq_fields_like_recbole(tmp_path):
    path = tmp_path / "x.item"
    path.write_text("item_id:token\ttitle:token_seq\tbrand:token\nA\tRed|Lip Stick\tAc|me\n", encoding="utf-8")
    assert read_item_table(path, "item_id", ["title", "brand"], seq_separator="|")["A"] == {
        "title": "Red Lip Stick",
        "brand": "Ac|me",
    }  # a token field is one token: left as it is
    assert read_item_table(path, "item_id", ["title"])["A"]["title"] == "Red|Lip Stick"
