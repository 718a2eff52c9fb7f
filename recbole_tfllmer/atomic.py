"""One way to write a file so that readers never see half of it.

Every artefact the plugin writes (embedding caches, checkpoints, leaderboard cells and
summaries) goes through `atomic_write`: a temp file in the target directory, fsync, then
os.replace, then an fsync of the directory. A crash leaves the old file or the complete new
one, and at most a stray hidden `.tmp` file that no reader picks up.
"""

import hashlib
import os
import tempfile


class _HashingWriter:
    """File wrapper that hashes the bytes written through it (for checksummed caches)."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()

    def write(self, b):
        self.sha.update(b)
        return self._f.write(b)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write_fn, hash_bytes=False):
    """Call `write_fn(binary_file)` into a temp file, then rename it over `path`.

    With `hash_bytes`, `write_fn` gets a writer that hashes what it writes and the sha256
    hex digest is returned (the file itself for writers that need seek/tell, e.g. torch.save).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f) if hash_bytes else f
            write_fn(writer)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return writer.sha.hexdigest() if hash_bytes else None


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
