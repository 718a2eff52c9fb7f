"""Row-chunked passes over the prepared LLM embeddings, with numpy or on a torch device.

Rec-PCA reads the n x D embeddings X only through four products of the prepared matrix
``X_p`` (row i is ``s_i x_i - mu``): ``X_p^T X_p``, ``X_p V``, ``X_p^T U`` and
``tr(X_p^T X_p)``.  Both implementations read X in row chunks (so X may be a read-only
memory map), never centre or copy it as a whole, compute each chunk's product in X's dtype
and accumulate the sums in float64.

* :class:`NumpyPasses`: the CPU path (BLAS through numpy).
* :class:`TorchPasses`: the same arithmetic on a torch device, a GPU when the run has one.
  X is uploaded once when it fits in a quarter of the device's free memory, otherwise each
  pass streams its chunks; float32 products run at full float32 precision (TF32 off), so the
  result matches the CPU path to float32 rounding, not bit for bit.

The D x D solvers (eigh, Lanczos, subspace iteration) stay on the CPU in float64. The item-space
trade-off, whose eigenvectors are n long, runs on the device with ``TorchPasses`` (its kernel
products through :meth:`TorchPasses.kernel_product`, the graph as a torch sparse matrix, the
solver in :mod:`.chebyshev`).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

__all__ = ["NumpyPasses", "TorchPasses", "dense_passes", "row_chunks", "prepared_chunk", "check_device"]

# Rows per chunk: a chunk of X is |X| / 8, clamped to [4 MiB, 64 MiB], so per-chunk
# temporaries stay a small fraction of X for large and small catalogues alike.
_CHUNK_BYTES_MIN, _CHUNK_BYTES_MAX, _CHUNKS_PER_MATRIX = 4 * 2**20, 64 * 2**20, 8
# TorchPasses keeps X on an accelerator when it takes at most this share of the free memory.
_RESIDENT_SHARE = 0.25


def row_chunks(n_rows: int, row_bytes: int):
    row_bytes = max(row_bytes, 1)
    chunk_bytes = min(max(n_rows * row_bytes // _CHUNKS_PER_MATRIX, _CHUNK_BYTES_MIN), _CHUNK_BYTES_MAX)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def prepared_chunk(X, rows, row_scale, mean_c):
    """X_p[rows] = s_i x_i - mu, in X's dtype (a fresh C-contiguous chunk-sized array)."""
    if row_scale is None:
        chunk = np.subtract(X[rows], mean_c)
    else:
        chunk = np.multiply(X[rows], row_scale[rows].astype(X.dtype)[:, None])
        chunk -= mean_c
    return np.ascontiguousarray(chunk)


def check_device(device):
    """None (numpy) or a torch device that exists on this machine; the error names the fix."""
    if device is None:
        return None
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as cuda:0 or cpu, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA device")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def dense_passes(X, row_scale, mean, device=None):
    """The passes over ``X_p`` on ``device`` (None: numpy on the CPU)."""
    if device is None:
        return NumpyPasses(X, row_scale, mean)
    return TorchPasses(X, row_scale, mean, check_device(device))


class NumpyPasses:
    """``X_p`` products on the CPU, one row chunk at a time."""

    device_name = "numpy"

    def __init__(self, X, row_scale, mean):
        self.X, self.row_scale = X, row_scale
        self.mean_c = mean.astype(X.dtype)
        self.n, self.dim = X.shape

    def _rows(self):
        return row_chunks(self.n, self.dim * self.X.itemsize)

    def gram(self):
        """``X_p^T X_p`` (D x D, float64)."""
        gram = np.zeros((self.dim, self.dim))
        for rows in self._rows():
            chunk = prepared_chunk(self.X, rows, self.row_scale, self.mean_c)
            gram += chunk.T @ chunk  # numpy dispatches A^T A to syrk
            del chunk  # free before the next chunk is allocated
        return gram

    def project(self, basis, dtype=np.float64):
        """``X_p V`` (n x k; products in X's dtype, stored as ``dtype``)."""
        basis_c = basis.astype(self.X.dtype)
        projected = np.empty((self.n, basis.shape[1]), dtype=dtype)
        for rows in self._rows():
            projected[rows] = prepared_chunk(self.X, rows, self.row_scale, self.mean_c) @ basis_c
        return projected

    def transpose_product(self, U):
        """``X_p^T U`` (D x k, float64)."""
        result = np.zeros((self.dim, U.shape[1]))
        for rows in self._rows():
            result += prepared_chunk(self.X, rows, self.row_scale, self.mean_c).T @ U[rows].astype(
                self.X.dtype, copy=False
            )
        return result

    def total_variance(self):
        """``tr(X_p^T X_p)`` (float64 sums)."""
        total = 0.0
        for rows in self._rows():
            chunk = prepared_chunk(self.X, rows, self.row_scale, self.mean_c)
            total += float(np.einsum("ij,ij->i", chunk, chunk).sum(dtype=np.float64))
        return total


class TorchPasses:
    """``X_p`` products on a torch device, accumulated in float64 there."""

    def __init__(self, X, row_scale, mean, device):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.device_name = str(self.device)
        self.X = X
        self.n, self.dim = X.shape
        self.dtype = torch.float64 if X.dtype == np.float64 else torch.float32
        self.mean = torch.as_tensor(mean.astype(X.dtype), device=self.device)
        self.scale = None if row_scale is None else torch.as_tensor(row_scale.astype(X.dtype), device=self.device)
        self.resident = None
        if self.device.type == "cpu":  # torch.from_numpy shares X's memory: nothing to upload
            self.resident = self._shared(X)
        elif self.device.type == "cuda" and X.nbytes <= _RESIDENT_SHARE * torch.cuda.mem_get_info(self.device)[0]:
            self.resident = torch.empty(X.shape, dtype=self.dtype, device=self.device)
            for rows in self._rows():
                self.resident[rows] = self._upload(X[rows])

    def _rows(self):
        return row_chunks(self.n, self.dim * self.X.itemsize)

    def _shared(self, array):
        """A tensor over the array's memory (read-only memory maps included: nothing writes to it)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return self.torch.from_numpy(np.ascontiguousarray(array))

    def _upload(self, array):
        tensor = self._shared(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _chunk(self, rows):
        chunk = self.resident[rows] if self.resident is not None else self._upload(self.X[rows])
        if self.scale is not None:
            chunk = chunk * self.scale[rows, None]
        return chunk - self.mean  # a fresh tensor: the resident X is never modified

    @contextlib.contextmanager
    def _full_precision(self):
        """float32 products at float32 precision (no TF32), whatever the caller configured."""
        before = self.torch.get_float32_matmul_precision()
        self.torch.set_float32_matmul_precision("highest")
        try:
            with self.torch.no_grad():
                yield
        finally:
            self.torch.set_float32_matmul_precision(before)

    def _zeros(self, rows, cols):
        return self.torch.zeros((rows, cols), dtype=self.torch.float64, device=self.device)

    def _numpy(self, tensor):
        return tensor.cpu().numpy()

    def gram(self):
        with self._full_precision():
            gram = self._zeros(self.dim, self.dim)
            for rows in self._rows():
                chunk = self._chunk(rows)
                gram += (chunk.T @ chunk).double()
                del chunk
            return self._numpy(gram)

    def project(self, basis, dtype=np.float64):
        with self._full_precision():
            basis_t = self.torch.as_tensor(basis.astype(self.X.dtype), device=self.device)
            projected = np.empty((self.n, basis.shape[1]), dtype=dtype)
            for rows in self._rows():
                projected[rows] = self._numpy(self._chunk(rows) @ basis_t)
            return projected

    def transpose_product(self, U):
        with self._full_precision():
            result = self._zeros(self.dim, U.shape[1])
            for rows in self._rows():
                result += (self._chunk(rows).T @ self._upload(U[rows].astype(self.X.dtype))).double()
            return self._numpy(result)

    def kernel_product(self, V):
        """``X_p (X_p^T V)`` for an (n, b) float64 tensor on the device, kept there (the item-space
        eigensolver's product: the same two passes and dtypes as ``project(transpose_product(V))``)."""
        with self._full_precision():
            inner = self._zeros(self.dim, V.shape[1])
            for rows in self._rows():
                inner += (self._chunk(rows).T @ V[rows].to(self.dtype)).double()
            inner = inner.to(self.dtype)
            out = self.torch.empty(V.shape, dtype=self.torch.float64, device=self.device)
            for rows in self._rows():
                out[rows] = (self._chunk(rows) @ inner).double()
            return out

    def total_variance(self):
        with self._full_precision():
            total = self.torch.zeros((), dtype=self.torch.float64, device=self.device)
            for rows in self._rows():
                chunk = self._chunk(rows)
                total += (chunk * chunk).sum(dim=1, dtype=self.torch.float64).sum()
            return float(total)
