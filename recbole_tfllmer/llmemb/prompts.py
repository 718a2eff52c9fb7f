"""LLMEmb attribute prompts and the attribute-drop views SCFT trains on (spec A.1, A.2.2).

An item is a list of attribute strings ("title is Toy Story"). Its *full prompt* (what is
finally encoded) is an instruction line followed by every attribute; a *view* (what SCFT
contrasts) is the same instruction followed by a random subset of the attributes in a random
order. Pure python, so prompts can be built and checked without torch.
"""

import math
import random
from dataclasses import dataclass, field

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.text.item_text import default_fields, read_header, read_item_table


@dataclass(frozen=True)
class PromptFormat:
    """How attributes become prompt text.

    `names` renames fields for display, as (field, display name) pairs (a mapping is accepted
    and stored as sorted pairs, so the format stays hashable and its identity stable); a field
    not listed shows its own name. Values are cut to `max_chars` characters, as the original
    notebooks cut them to 100.
    """

    instruction: str = "The item has the following attributes: \n "
    attr_template: str = "{name} is {value}"
    attr_sep: str = "; "
    max_chars: int = 100
    names: tuple = field(default=())

    def __post_init__(self):
        names = self.names.items() if isinstance(self.names, dict) else (self.names or ())
        pairs = tuple(sorted((str(k), str(v)) for k, v in names))
        object.__setattr__(self, "names", pairs)
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ConfigError(f"`llmemb_attr_max_chars` must be an integer >= 1, got {self.max_chars!r}.")
        try:
            self.attr_template.format(name="n", value="v")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"`llmemb_attr_template` {self.attr_template!r} may use only {{name}} and {{value}} ({e!r})."
            ) from None

    def display_name(self, field_name):
        """The name shown for `field_name` in a prompt."""
        return dict(self.names).get(field_name, field_name)

    def as_dict(self):
        """JSON-friendly form, for encoder identities (names as [field, display] lists)."""
        return {
            "instruction": self.instruction,
            "attr_template": self.attr_template,
            "attr_sep": self.attr_sep,
            "max_chars": self.max_chars,
            "names": [list(p) for p in self.names],
        }


def clean_value(value, max_chars):
    """A raw field value as it may appear inside a prompt, or "" when it is empty.

    ";" would read as an attribute separator when views are built (they are joined with ";"),
    and a newline would break the one-line attribute list, hence the replacements (as the
    original notebooks did)."""
    text = "" if value is None else str(value).strip()
    text = text[:max_chars].rstrip()
    return text.replace(";", ".").replace("\r", " ").replace("\n", " ")


def item_attributes(values, fields, fmt=None):
    """One attribute string per field of `fields` (in that order) whose value is not empty."""
    fmt = fmt or PromptFormat()
    attributes = []
    for name in fields:
        value = clean_value(values.get(name), fmt.max_chars)
        if value:
            attributes.append(fmt.attr_template.format(name=fmt.display_name(name), value=value))
    return attributes


def full_prompt(attributes, fmt=None):
    """The text encoded for an item after SCFT: instruction + every attribute, no trailing separator."""
    fmt = fmt or PromptFormat()
    return fmt.instruction + fmt.attr_sep.join(attributes)


def kept_count(k, drop_ratio):
    """Attributes a view keeps out of k: k - floor(k * drop_ratio), but at least 1.

    The original drops floor(k * rho) even when that leaves nothing, so every one-attribute
    item collapses to the same bare instruction; keeping one is spec A.7 #3."""
    return max(1, k - math.floor(k * drop_ratio))


def draw_view(attributes, drop_ratio, rng, fmt=None):
    """One attribute-drop view: a shuffled copy of `attributes`, cut to `kept_count` entries.

    The original split the full prompt at its newline and at ";", so every attribute kept the
    space that followed "; " (and the first the space that ends the instruction), then rebuilt
    the view as instruction line + newline + ";".join(kept). The same text here is the
    instruction without its trailing spaces followed by ";".join(" " + a): with the default
    format, a view that keeps every attribute in order equals the full prompt.
    """
    if not attributes:
        raise ValueError("draw_view needs at least one attribute (items without attributes are not trained on)")
    fmt = fmt or PromptFormat()
    shuffled = list(attributes)
    rng.shuffle(shuffled)
    kept = shuffled[: kept_count(len(shuffled), drop_ratio)]
    return fmt.instruction.rstrip(" ") + ";".join(" " + a for a in kept)


def check_drop_ratio(drop_ratio):
    """rho as a float in [0, 1]; ConfigError naming `scft_drop_ratio` otherwise."""
    try:
        rho = float(drop_ratio)
    except (TypeError, ValueError):
        rho = float("nan")
    if not 0.0 <= rho <= 1.0:
        raise ConfigError(f"`scft_drop_ratio` must be in [0, 1], got {drop_ratio!r}.")
    return rho


def python_rng_state(rng):
    """A `random.Random`'s state as plain lists and ints (loads with torch's weights_only)."""
    version, internal, gauss_next = rng.getstate()
    return {"version": version, "state": list(internal), "gauss_next": gauss_next}


def set_python_rng_state(rng, state):
    rng.setstate((state["version"], tuple(state["state"]), state["gauss_next"]))


class ViewSampler:
    """Pairs of views per item, drawn afresh on every call or once per item.

    `resample=True` (the plugin default, spec A.7 #2): every `pair(i)` draws two new views
    from one stream seeded by `seed`, so a run is reproducible for a fixed call sequence.
    `resample=False` reproduces the original, which drew one pair per item when preprocessing
    and reused it for the whole run; here that pair depends only on (seed, i), not on the
    order items are asked for. The streams are derived from the seed with a prefix, so they
    differ from a plain `random.Random(seed)` the caller may use for batch order.
    """

    def __init__(self, attributes_per_item, drop_ratio, seed, resample=True, fmt=None):
        self.attributes_per_item = [list(a) for a in attributes_per_item]
        self.drop_ratio = check_drop_ratio(drop_ratio)
        self.seed = int(seed)
        self.resample = bool(resample)
        self.fmt = fmt or PromptFormat()
        self._rng = random.Random(f"scft-views:{self.seed}")
        self._fixed = {}

    def __len__(self):
        return len(self.attributes_per_item)

    def pair(self, i):
        """(view_a, view_b) of item i: two independent draws."""
        if self.resample:
            return self._draw_pair(i, self._rng)
        if i not in self._fixed:
            self._fixed[i] = self._draw_pair(i, random.Random(f"scft-views:{self.seed}:{i}"))
        return self._fixed[i]

    def state(self):
        """The resampling stream's position (fixed pairs depend only on (seed, i) and are redrawn)."""
        return python_rng_state(self._rng)

    def restore(self, state):
        set_python_rng_state(self._rng, state)

    def _draw_pair(self, i, rng):
        attributes = self.attributes_per_item[i]
        return draw_view(attributes, self.drop_ratio, rng, self.fmt), draw_view(
            attributes, self.drop_ratio, rng, self.fmt
        )


def attribute_lists_from_file(
    item_file, id_field, fields=None, fmt=None, field_separator="\t", seq_separator=" ", encoding="utf-8"
):
    """(token -> attribute list for every row of the `.item` file, fields used).

    `fields=None` means every token / token_seq field but the id, as `text_fields: ~` does.
    Parsing is `read_item_table`'s (RecBole's separators, raw strings, CSV quoting).
    """
    if fields is None:
        fields = default_fields(read_header(item_file, field_separator, encoding), id_field)
    fields = list(fields)
    table = read_item_table(item_file, id_field, fields, field_separator, seq_separator, encoding)
    return {token: item_attributes(values, fields, fmt) for token, values in table.items()}, fields
