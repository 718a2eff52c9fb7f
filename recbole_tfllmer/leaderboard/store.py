"""Cell files: one JSON per finished cell, written atomically; claims so workers can share a queue.

Layout under results/<leaderboard>/:
    cells/<cell_id>.json      a finished cell (status "done"); the summary reads only these
    failed/<cell_id>.json     the traceback of a failed attempt (retried on the next run)
    claims/<cell_id>.claim    "host pid time" while a worker runs the cell
"""

import json
import math
import os
import socket
import time
from pathlib import Path

from recbole_tfllmer.atomic import atomic_write_text


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def _clean(value):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def atomic_write_json(path, payload):
    """Write JSON to a temp file in the same directory, fsync it, then os.replace it into place.

    A reader sees either the old file, or the complete new one, never a partial file; a crash
    leaves at most a stray `.tmp` file, which `read_cells` ignores.
    """
    text = json.dumps(_clean(json.loads(json.dumps(payload, default=_json_default))), indent=1, sort_keys=True)
    atomic_write_text(path, text + "\n")
    return path


class CellStore:
    def __init__(self, results_dir):
        self.root = Path(results_dir)
        self.cells_dir = self.root / "cells"
        self.failed_dir = self.root / "failed"
        self.claims_dir = self.root / "claims"

    def cell_path(self, cell_id):
        return self.cells_dir / f"{cell_id}.json"

    def read(self, cell_id):
        path = self.cell_path(cell_id)
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return None

    def is_done(self, cell_id, fingerprint=None):
        record = self.read(cell_id)
        if not record or record.get("status") != "done":
            return False
        return fingerprint is None or record.get("fingerprint") == fingerprint

    def write(self, cell_id, payload):
        path = atomic_write_json(self.cell_path(cell_id), payload)
        failed = self.failed_dir / f"{cell_id}.json"
        if failed.exists():
            failed.unlink()
        return path

    def write_failure(self, cell_id, payload):
        return atomic_write_json(self.failed_dir / f"{cell_id}.json", payload)

    def read_all(self):
        """Every finished cell record (sorted by cell id); temp and unreadable files are skipped."""
        records = []
        if not self.cells_dir.is_dir():
            return records
        for path in sorted(self.cells_dir.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue
            if record.get("status") == "done":
                records.append(record)
        return records

    # -- claims: several workers (processes or machines on a shared disk) split one queue --
    def claim(self, cell_id, stale_seconds=6 * 3600):
        """Take the cell for this process; False if a live worker holds it."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        path = self.claims_dir / f"{cell_id}.claim"
        stamp = f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not self._claim_is_stale(path, stale_seconds):
                return False
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return self.claim(cell_id, stale_seconds)
        with os.fdopen(fd, "w") as f:
            f.write(stamp)
        return True

    def is_claimed(self, cell_id, stale_seconds=6 * 3600):
        """Whether a live worker holds the cell (what `claim` would refuse), without taking it."""
        path = self.claims_dir / f"{cell_id}.claim"
        return path.is_file() and not self._claim_is_stale(path, stale_seconds)

    def release(self, cell_id):
        try:
            (self.claims_dir / f"{cell_id}.claim").unlink()
        except FileNotFoundError:
            pass

    @staticmethod
    def _claim_is_stale(path, stale_seconds):
        try:
            host, pid, started = path.read_text().split()
        except (OSError, ValueError):
            return True
        if time.time() - float(started) > stale_seconds:
            return True
        if host == socket.gethostname():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True  # the worker that claimed it died (killed run): take it over
            except PermissionError:
                return False
        return False
