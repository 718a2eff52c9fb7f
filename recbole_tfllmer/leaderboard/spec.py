"""Leaderboard specification: a yaml that names datasets x backbones x methods x seeds x vector kinds.

A *cell* is one training run. Its RecBole configuration is layered exactly as a user would
layer it on the command line of `run_recbole_tfllmer.py`:

    config_file_list = [<dataset properties>, <method_dir>/<Method>.yaml]
    config_dict      = shared overrides  <  dataset overrides  <  backbone overrides
                       <  vector-kind options  <  per-method overrides  <  per-(backbone, method)
                       overrides  <  {backbone, seed, ...}

so every method goes through the plugin model its preset names (`model:`, TFLLMER when it
names none) and differs only by its option preset. Methods whose preset has `item_init:
random` use no LLM vectors: they get the single vector kind "none" (one run per
backbone/seed, shown beside both kinds).

A method that needs a collaborative model (LLMEmb with `llmemb_align_alpha` > 0 and no
`llmemb_collab` of its own aligns with its item table; A-LLMRec without an
`allmrec_cf_checkpoint` freezes the whole model) *requires* the board's `collab_method` cell
(RandInit) on `collab_backbone` (SASRec, as in their code; `same`: the cell's own backbone) of the
same dataset and seed: that cell exports its
best model (`artifacts/<cell_id>.npy` + `.tokens.txt`, or `artifacts/<cell_id>.pth`, beside
the cell files) and the requiring cell runs after it, with the file as its option.

A method listed in `table_sources` (`{ALLMRec-S1: ALLMRec-stage1}`) is initialised from another
method's exported item table (its `precomputed_embeddings`): the cell of that method on
`collab_backbone`, same dataset, vectors and seed, which may itself require the RandInit cell,
so the board runs the chain in order. A-LLMRec's backbone is its frozen model's, so ALLMRec cells
run on `collab_backbone` only (on every backbone with `same`).

`anchors:` lists published results on the same split and filtering (dataset, backbone, method,
metric, value, source); the summary prints each matching row's distance to its anchor. They are
reading aids only: no cell's fingerprint sees them.

The presets ship with the package (recbole_tfllmer/properties/method/); a board may name
another folder with `method_dir:`, whose presets come first (a name it lacks is the shipped one). Relative paths in a board yaml resolve against the yaml's
folder, then the current directory: nothing here assumes a repository checkout.
"""

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The shipped method presets (package data), so an installed package finds them too.
METHOD_DIR = Path(__file__).resolve().parents[1] / "properties" / "method"
NO_VECTORS = "none"
SAME_BACKBONE = "same"  # collab_backbone: each backbone's own collaborative cell

DEFAULT_VECTOR_KINDS = {
    # sentence-transformers MiniLM: mean pooling + the pipeline's final L2 normalisation
    "st": {"text_encoder": "all-MiniLM-L6-v2", "text_encoder_type": "sentence-transformers"},
    # the same network's raw mean-pooled hidden states, no final normalisation
    "raw": {
        "text_encoder": "all-MiniLM-L6-v2",
        "text_encoder_type": "transformers",
        "text_pooling": "mean",
        "text_normalize": False,
    },
}


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class Cell:
    dataset: str
    backbone: str
    method: str
    vectors: str
    seed: int

    @property
    def cell_id(self):
        return f"{self.dataset}__{self.backbone}__{self.method}__{self.vectors}__seed{self.seed}"

    def key(self):
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "method": self.method,
            "vectors": self.vectors,
            "seed": self.seed,
        }


@dataclass
class LeaderboardSpec:
    name: str
    path: Path
    datasets: dict  # name -> {"properties": path, "overrides": {...}}
    backbones: list
    methods: list
    seeds: list
    vector_kinds: dict  # name -> option dict
    overrides: dict = field(default_factory=dict)
    backbone_overrides: dict = field(default_factory=dict)
    method_overrides: dict = field(default_factory=dict)
    # {backbone: {method: {option: value}}}: a method's setting for one backbone (e.g. the item norm r
    # validation chose for GRU4Rec); only those cells' fingerprints see it
    backbone_method_overrides: dict = field(default_factory=dict)
    method_dir: Path = METHOD_DIR
    collab_method: str = "RandInit"  # whose item table LLMEmb cells align with ...
    collab_backbone: str = "SASRec"  # ... trained on this backbone (their code: SASRec for every backbone),
    # or "same": each backbone's own collab_method cell
    table_sources: dict = field(default_factory=dict)  # method -> method whose exported item table it starts from
    protocol: str = ""
    conditioning: dict = field(default_factory=lambda: {"sample_size": 256, "seed": 0})
    longtail: dict = field(default_factory=lambda: {"buckets": 5, "k": 10})
    tuning: dict = field(default_factory=dict)  # validated `tuning:` section (tuning.py), or {}
    tuned: dict = field(default_factory=dict)  # tuned_key(cell) -> options chosen on validation
    anchors: list = field(default_factory=list)  # validated `anchors:` entries (_check_anchors)
    raw: dict = field(default_factory=dict)

    # -- paths --------------------------------------------------------------------------
    def results_dir(self, root=None):
        """<root>/<name>, absolute (cell processes run in the scratch folder); root defaults to
        ./results under the current directory, as RecBole writes ./saved."""
        return Path(root or "results").absolute() / self.name

    def method_file(self, method):
        """The board's `method_dir` preset of that name, else the shipped one."""
        folders = list(dict.fromkeys([Path(self.method_dir), Path(METHOD_DIR)]))
        for folder in folders:
            path = folder / f"{method}.yaml"
            if path.is_file():
                return path
        known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
        raise SpecError(
            f"leaderboard {self.path}: method {method!r} has no preset {Path(self.method_dir) / f'{method}.yaml'}; "
            f"presets in {' and '.join(str(f) for f in folders)}: {', '.join(known) or 'none'}"
        )

    def method_options(self, method):
        options = dict(_read_preset(self.method_file(method)))  # callers read it; only the top level changes
        options.update(self.method_overrides.get(method) or {})
        return options

    def model_of(self, method):
        return self.method_options(method).get("model", "TFLLMER")

    def uses_vectors(self, method):
        if self.model_of(method) != "TFLLMER":
            return True  # LLMEmb embeds item text
        return self.method_options(method).get("item_init", "rec_pca") != "random"

    def collab_backbone_of(self, backbone):
        """The backbone whose collab_method cell a `backbone` cell aligns with or freezes."""
        return backbone if self.collab_backbone == SAME_BACKBONE else self.collab_backbone

    def collab_requirement(self, cell):
        """(source cell, artifact kind, option it fills) of a cell that needs another cell's
        trained model, or None: LLMEmb aligns with its item table, A-LLMRec freezes the model."""
        source_method = self.table_sources.get(cell.method)
        if source_method is not None:
            vectors = cell.vectors if self.uses_vectors(source_method) else NO_VECTORS
            source = Cell(cell.dataset, self.collab_backbone_of(cell.backbone), source_method, vectors, cell.seed)
            return source, "item_table", "precomputed_embeddings"
        options = self.method_options(cell.method)
        model = self.model_of(cell.method)
        source = Cell(cell.dataset, self.collab_backbone_of(cell.backbone), self.collab_method, NO_VECTORS, cell.seed)
        if model == "ALLMRec" and not options.get("allmrec_cf_checkpoint"):
            return source, "checkpoint", "allmrec_cf_checkpoint"
        if model != "LLMEmb" or options.get("llmemb_collab"):
            return None
        from recbole_tfllmer.options import default_of

        if float(options.get("llmemb_align_alpha", default_of("llmemb_align_alpha"))) <= 0:
            return None
        return source, "item_table", "llmemb_collab"

    def collab_source(self, cell):
        """The cell whose trained model `cell` needs, or None."""
        requirement = self.collab_requirement(cell)
        return requirement[0] if requirement else None

    def exports(self, cell):
        """The artifact kinds other cells of the board need from `cell` (item_table, checkpoint)."""
        kinds = set()
        for other in self.cells():
            requirement = self.collab_requirement(other)
            if requirement and requirement[0] == cell:
                kinds.add(requirement[1])
        return sorted(kinds)

    def artifact_path(self, cell, results_dir, kind="item_table"):
        suffix = {"item_table": ".npy", "checkpoint": ".pth"}[kind]
        return Path(results_dir) / "artifacts" / f"{cell.cell_id}{suffix}"

    # -- cells --------------------------------------------------------------------------
    def cells(self):
        out = []
        for dataset in self.datasets:
            for backbone in self.backbones:
                for method in self.methods:
                    if self.model_of(method) == "ALLMRec" and backbone != self.collab_backbone_of(backbone):
                        continue  # its backbone is the frozen model's: one cell per dataset and seed
                    kinds = list(self.vector_kinds) if self.uses_vectors(method) else [NO_VECTORS]
                    for vectors in kinds:
                        for seed in self.seeds:
                            out.append(Cell(dataset, backbone, method, vectors, int(seed)))
        return out

    def cell_inputs(self, cell, checkpoint_dir=None):
        """(config_file_list, config_dict) for RecBole, plus a fingerprint of everything that matters."""
        ds = self.datasets[cell.dataset]
        files = [str(ds["properties"]), str(self.method_file(cell.method))]
        config = {}
        config.update(copy.deepcopy(self.overrides))
        config.update(copy.deepcopy(ds.get("overrides") or {}))
        config.update(copy.deepcopy(self.backbone_overrides.get(cell.backbone) or {}))
        if cell.vectors != NO_VECTORS:
            config.update(copy.deepcopy(self.vector_kinds[cell.vectors]))
        config.update(copy.deepcopy(self.method_overrides.get(cell.method) or {}))
        config.update(copy.deepcopy((self.backbone_method_overrides.get(cell.backbone) or {}).get(cell.method) or {}))
        config.update(copy.deepcopy(self.tuned.get(tuned_key(cell)) or {}))
        config.update({"model": self.model_of(cell.method), "backbone": cell.backbone, "seed": cell.seed})
        if checkpoint_dir is not None:
            config["checkpoint_dir"] = str(checkpoint_dir)
        return files, config

    def fingerprint(self, cell):
        files, config = self.cell_inputs(cell)
        config.pop("checkpoint_dir", None)
        blob = {
            "files": [Path(f).read_text(encoding="utf-8") for f in files],
            "config": config,
            "conditioning": self.conditioning,
            "longtail": self.longtail,
        }
        source = self.collab_source(cell)
        if source is not None:  # a new collaborative table makes the cell stale
            blob["requires"] = {source.cell_id: self.fingerprint(source)}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_PRESETS = {}


def _read_preset(path):
    """A method preset's options, parsed once per file version: a board asks for them for every
    pair of cells (which cell needs which export), thousands of times on a large board."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PRESETS:
        with open(path, encoding="utf-8") as f:
            _PRESETS[key] = yaml.safe_load(f) or {}
    return _PRESETS[key]


def tuned_key(cell):
    """Tuned options are chosen per dataset, backbone, method and vector kind (not per seed)."""
    return f"{cell.dataset}/{cell.backbone}/{cell.method}/{cell.vectors}"


def _check_tuning(raw, methods, path):
    """The `tuning:` section: the same number of trials for every method, each drawn from that
    method's own grid (`space`), run with one seed and judged on validation only."""
    tuning = raw.get("tuning")
    if not tuning:
        return {}
    where = f"leaderboard {path}: tuning"
    trials = tuning.get("trials")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SpecError(f"{where}.trials must be an integer >= 1 (trials per method), got {trials!r}")
    space = tuning.get("space") or {}
    missing = [m for m in methods if m not in space]
    if missing:
        raise SpecError(
            f"{where}.space has no grid for method(s) {missing}: every method gets the same budget, "
            f"so every method needs a grid (at least one option)"
        )
    for method, grid in space.items():
        if method not in methods:
            raise SpecError(f"{where}.space names {method!r}, which is not in `methods`")
        if not isinstance(grid, dict) or not grid:
            raise SpecError(f"{where}.space.{method} must map option names to lists of values")
        for option, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"{where}.space.{method}.{option} must be a non-empty list of values")
    return {
        "trials": trials,
        "seed": int(tuning.get("seed", raw["seeds"][0])),
        "sampler_seed": int(tuning.get("sampler_seed", 0)),
        "space": space,
    }


ANCHOR_METRICS = ("ndcg@10", "ndcg@20", "hit@10", "hit@20")
_ANCHOR_FIELDS = ("dataset", "backbone", "method", "metric", "value", "source")


def _check_anchors(raw, spec, path):
    """`anchors:` -> a list of dicts with every field checked against the board."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SpecError(f"leaderboard {path}: `anchors` must be a list of {{{', '.join(_ANCHOR_FIELDS)}}} entries")
    anchors = []
    for i, entry in enumerate(raw):
        where = f"leaderboard {path}: anchors[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(_ANCHOR_FIELDS):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise SpecError(f"{where}: give exactly the fields {list(_ANCHOR_FIELDS)} (got {got})")
        for key, known in (("dataset", spec.datasets), ("backbone", spec.backbones), ("method", spec.methods)):
            if str(entry[key]) not in known:
                raise SpecError(f"{where}: {key} {entry[key]!r} is not on the board (use one of {list(known)})")
        if entry["metric"] not in ANCHOR_METRICS:
            raise SpecError(f"{where}: metric {entry['metric']!r} is not reported; use one of {list(ANCHOR_METRICS)}")
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise SpecError(f"{where}: value {value!r} must be a number in (0, 1], the published metric")
        if not str(entry["source"] or "").strip():
            raise SpecError(f"{where}: give the `source` of the published number (paper, table)")
        anchors.append({**{k: str(entry[k]) for k in _ANCHOR_FIELDS if k != "value"}, "value": float(value)})
    return anchors


def _resolve(path, base):
    """A relative path names a file beside the board yaml or, failing that, one under the current
    directory (a board is normally run from the folder holding it and its data); when neither
    exists, the current-directory reading, so errors name where it was looked for."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute():
        return path
    for root in (Path(base), Path.cwd()):
        if (root / path).exists():
            return (root / path).resolve()
    return (Path.cwd() / path).resolve()


def load_spec(path):
    path = Path(path).resolve()
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    return spec_from_dict(raw, path)


BOARD_KEYS = (
    "name", "protocol", "datasets", "backbones", "methods", "seeds", "vector_kinds", "overrides",
    "backbone_overrides", "method_overrides", "backbone_method_overrides", "method_dir", "collab_method",
    "collab_backbone", "table_sources", "conditioning", "longtail", "tuning", "anchors",
)  # fmt: skip


def spec_from_dict(raw, path=None):
    path = Path(path) if path else Path.cwd() / "inline.yaml"
    base = path.parent
    if not isinstance(raw, dict):
        raise SpecError(f"leaderboard {path}: the yaml must be a mapping of {list(BOARD_KEYS)}")
    unknown = sorted(set(raw) - set(BOARD_KEYS))
    if unknown:
        raise SpecError(f"leaderboard {path}: unknown key(s) {unknown}; a board yaml takes {list(BOARD_KEYS)}")
    for key in ("datasets", "backbones", "methods", "seeds"):
        if not raw.get(key):
            raise SpecError(f"leaderboard {path}: `{key}` is missing or empty")
    datasets = {}
    for name, entry in raw["datasets"].items():
        entry = dict(entry or {})
        if "properties" not in entry:
            raise SpecError(f"dataset {name!r}: give its `properties` yaml")
        entry["properties"] = _resolve(entry["properties"], base)
        if not entry["properties"].is_file():
            raise SpecError(
                f"leaderboard {path}: dataset {name!r}: no properties file {entry['properties']} "
                f"(relative paths are read beside the yaml, then from the current directory)"
            )
        overrides = dict(entry.get("overrides") or {})
        if "data_path" in overrides:  # absolute, so cell processes (run elsewhere) find the data
            overrides["data_path"] = str(_resolve(overrides["data_path"], base)) + os.sep
        entry["overrides"] = overrides
        datasets[str(name)] = entry
    kinds = raw.get("vector_kinds")
    if kinds is None:
        kinds = DEFAULT_VECTOR_KINDS
    elif isinstance(kinds, list):
        unknown = [k for k in kinds if k not in DEFAULT_VECTOR_KINDS]
        if unknown:
            raise SpecError(f"unknown vector kinds {unknown}; define them as a mapping name -> options")
        kinds = {k: DEFAULT_VECTOR_KINDS[k] for k in kinds}
    if NO_VECTORS in kinds:
        raise SpecError(f"vector kind name {NO_VECTORS!r} is reserved for methods without LLM vectors")
    spec = LeaderboardSpec(
        name=str(raw.get("name") or path.stem),
        path=path,
        datasets=datasets,
        backbones=[str(b) for b in raw["backbones"]],
        methods=[str(m) for m in raw["methods"]],
        seeds=[int(s) for s in raw["seeds"]],
        vector_kinds={str(k): dict(v or {}) for k, v in kinds.items()},
        overrides=dict(raw.get("overrides") or {}),
        backbone_overrides=dict(raw.get("backbone_overrides") or {}),
        method_overrides=dict(raw.get("method_overrides") or {}),
        backbone_method_overrides=dict(raw.get("backbone_method_overrides") or {}),
        method_dir=_resolve(raw["method_dir"], base) if raw.get("method_dir") else METHOD_DIR,
        collab_method=str(raw.get("collab_method") or "RandInit"),
        collab_backbone=str(raw.get("collab_backbone") or "SASRec"),
        table_sources={str(k): str(v) for k, v in (raw.get("table_sources") or {}).items()},
        protocol=str(raw.get("protocol") or "").strip(),
        conditioning={"sample_size": 256, "seed": 0, **(raw.get("conditioning") or {})},
        longtail={"buckets": 5, "k": 10, **(raw.get("longtail") or {})},
        tuning=_check_tuning(raw, [str(m) for m in raw["methods"]], path),
        raw=raw,
    )
    spec.anchors = _check_anchors(raw.get("anchors"), spec, path)
    for method in spec.methods:
        spec.method_file(method)
    for method, source in spec.table_sources.items():
        if method not in spec.methods or source not in spec.methods:
            raise SpecError(
                f"leaderboard {path}: table_sources {method}: {source} names a method that is not in `methods`; "
                "both the method and the one it starts from must be on the board"
            )
    _check_collab_sources(spec, path)
    return spec


def _check_collab_sources(spec, path):
    """Every cell that requires a collaborative table finds its source cell on the board."""
    cells = set(spec.cells())
    for cell in cells:
        source = spec.collab_source(cell)
        if source is not None and source not in cells and cell.method in spec.table_sources:
            raise SpecError(
                f"leaderboard {path}: method {cell.method!r} starts from the item table of the {source.method} "
                f"{source.backbone} cell of the same dataset and seed, which is not on the board: add "
                f"{source.backbone} to `backbones` (or set `collab_backbone`)"
            )
        if source is not None and source not in cells:
            raise SpecError(
                f"leaderboard {path}: method {cell.method!r} aligns with the item table of the "
                f"{spec.collab_method} {source.backbone} cell of the same dataset and seed, which is not on the "
                f"board: add {spec.collab_method} to `methods` and {source.backbone} to `backbones` (or set "
                "`collab_method` / `collab_backbone`, or give the method an `llmemb_collab` file)"
            )


def parse_only(items):
    """`--only method=TFLLMER,NormOnly --only seed=2020` -> {"method": {...}, "seed": {...}}.

    A bare value (`--only SASRec`) matches any of the cell's fields.
    """
    filters = {}
    for item in items or []:
        for part in item.split():
            if "=" in part:
                key, values = part.split("=", 1)
                filters.setdefault(key.strip(), set()).update(v.strip() for v in values.split(",") if v.strip())
            else:
                filters.setdefault("*", set()).update(v.strip() for v in part.split(",") if v.strip())
    valid = {"dataset", "backbone", "method", "vectors", "seed", "*"}
    bad = set(filters) - valid
    if bad:
        raise SpecError(f"--only: unknown field(s) {sorted(bad)}; use {sorted(valid - {'*'})}")
    return filters


def cell_matches(cell, filters):
    key = {k: str(v) for k, v in cell.key().items()}
    for field_name, values in filters.items():
        if field_name == "*":
            if not values & set(key.values()):
                return False
        elif key[field_name] not in values:
            return False
    return True
