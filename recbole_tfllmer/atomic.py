"""One way to write a file so that readers never see half of it.

Every artefact the plugin writes (embedding caches, checkpoints, leaderboard cells and
summaries) goes through `atomic_write`: a temp file in the target directory, fsync, then
os.replace, then an fsync of the directory. A crash leaves the old file or the complete new
one, and at most a stray hidden `.tmp` file that no reader picks up.
"""

import errno
import hashlib
import os
import shutil
import tempfile

from recbole_tfllmer.errors import DiskFullError

_OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_out_of_space(err):
    """An OSError of a full disk / quota / file-size limit, also behind torch.save's wrapping of
    one (its zip writer raises a RuntimeError, "file write failed" or "unexpected pos", with
    the OSError as its context)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in _OUT_OF_SPACE:
            return True
        if isinstance(err, RuntimeError) and "write failed" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _mib(n_bytes):
    return f"{n_bytes / 2**20:.1f} MiB"


def out_of_space_error(path, size_hint=None, what_to_do="free space on it"):
    """DiskFullError naming the file, the space it needs and the space there is."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        free = _mib(shutil.disk_usage(directory).free) + " free"
    except OSError:
        free = "free space unknown"
    need = f"about {_mib(size_hint)} needed, " if size_hint else ""
    return DiskFullError(
        f"could not write '{path}': no space left on its device or a file-size limit ({need}{free} in "
        f"{directory}); nothing was half-written. {what_to_do[0].upper() + what_to_do[1:]}, then run again."
    )


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


def atomic_write(path, write_fn, hash_bytes=False, size_hint=None, what_to_do="free space on it"):
    """Call `write_fn(binary_file)` into a temp file, then rename it over `path`.

    With `hash_bytes`, `write_fn` gets a writer that hashes what it writes and the sha256
    hex digest is returned (the file itself for writers that need seek/tell, e.g. torch.save).
    A full disk is a DiskFullError naming the file (`size_hint` bytes, `what_to_do`); the
    temp file is removed and the previous file, if any, is untouched.
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
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if is_out_of_space(err):
            raise out_of_space_error(path, size_hint, what_to_do) from None
        raise
    _fsync_dir(directory)
    return writer.sha.hexdigest() if hash_bytes else None


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
