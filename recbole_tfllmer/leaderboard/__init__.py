"""Leaderboard: methods x backbones x datasets x seeds x vector kinds through RecBole's evaluation.

    python -m recbole_tfllmer.leaderboard --config leaderboards/ml-100k.yaml
    python -m recbole_tfllmer.leaderboard --config leaderboards/ml-100k.yaml --summary-only

A board with a `tuning:` section first tunes every method on validation with the same budget
(`tuning.py`), then runs its cells with the chosen options.

See `spec.py` (the yaml), `runner.py` (one cell), `store.py` (cell files, resume, claims),
`summary.py` / `plots.py` (outputs) and `longtail.py` (per-user ranks, popularity buckets).
"""

from recbole_tfllmer.leaderboard.spec import Cell, LeaderboardSpec, load_spec, spec_from_dict
from recbole_tfllmer.leaderboard.store import CellStore, atomic_write_json

__all__ = ["Cell", "CellStore", "LeaderboardSpec", "atomic_write_json", "load_spec", "spec_from_dict"]
