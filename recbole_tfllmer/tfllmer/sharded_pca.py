"""PCA of a catalogue whose rows are split over the ranks of a torch.distributed group.

For catalogues too large for one machine (10^7 items x 4,096 dims is 164 GB of float32): each
rank reads only its own rows (a memory map of its part of the file) and every product PCA
needs is a sum over rows, so one all-reduce per product gives every rank the same D x D (or
D x 2d) matrix: the column sums (mean), the Gram matrix ``X_p^T X_p`` (exact solver) or
``X_p^T (X_p V)`` per subspace step (iterative), and the variance totals.  Every rank then
solves the same small eigenproblem and projects its own rows.  The result equals
``rec_pca_projection(X, None, d, alpha=0)`` on the whole catalogue up to the order of the
float64 sums.  This is the package default (alpha 0); the graph trade-off (alpha > 0) needs
n-long Lanczos vectors and stays a one-process step.

    torchrun --nnodes 4 --nproc_per_node 1 ... -m recbole_tfllmer.tfllmer.sharded_pca \\
        --input vectors.npy --output reduced.npy --components 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

from .dense_passes import dense_passes
from .rec_pca import (
    _as_embedding_matrix,
    _auto_solver,
    _check_n_components,
    _pass_operator,
    _row_scale,
    _subspace_iteration,
    _top_eigenvectors,
    _weighted_column_sum,
    check_solver_options,
)

__all__ = ["sharded_pca", "shard_rows"]


def shard_rows(n_rows, rank, world_size):
    """The contiguous rows rank ``rank`` of ``world_size`` owns (the first n % world ranks get one more)."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _all_reduced(array, group):
    """The float64 sum of ``array`` over the ranks of ``group`` (the same bits on every rank)."""
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.array(array, dtype=np.float64))
    dist.all_reduce(tensor, group=group)
    return tensor.numpy()


class _AllReducedPasses:
    """The passes over this rank's rows, with every sum over rows all-reduced across the group.

    ``project`` stays local (this rank's rows of X_p V); ``transpose_product`` takes this rank's
    rows of U and returns the global X_p^T U, so the subspace iteration runs unchanged."""

    def __init__(self, local, group):
        self.local, self.group, self.X = local, group, local.X

    def gram(self):
        return _all_reduced(self.local.gram(), self.group)

    def project(self, basis, dtype=np.float64):
        return self.local.project(basis, dtype=dtype)

    def transpose_product(self, U):
        return _all_reduced(self.local.transpose_product(U), self.group)

    def total_variance(self):
        return float(_all_reduced([self.local.total_variance()], self.group)[0])


def sharded_pca(
    X_shard,
    n_components,
    group=None,
    center=True,
    row_normalize=False,
    solver="auto",
    tol=1e-5,
    max_iter=100,
    device=None,
):
    """This rank's rows of the PCA item vectors, the components (D x d, the same on every rank), the
    eigenvalues and stats; call it on every rank of ``group`` (default: the whole process group).

    ``X_shard``: this rank's (n_r, D) rows, in any split (``shard_rows`` gives a balanced one);
    ``device``: as in ``rec_pca_projection`` (a rank's GPU runs its passes).
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        raise ValueError(
            "sharded_pca needs an initialised torch.distributed process group (torchrun, init_process_group)"
        )
    X = _as_embedding_matrix(X_shard)
    solver = check_solver_options(solver, tol, max_iter)
    dim_in = X.shape[1]
    n_components = _check_n_components(n_components, dim_in)
    n_items = int(_all_reduced([X.shape[0]], group)[0])
    row_scale = _row_scale(X) if row_normalize else None
    mean = _all_reduced(_weighted_column_sum(X, row_scale), group) / n_items if center else np.zeros(dim_in)
    passes = _AllReducedPasses(dense_passes(X, row_scale, mean, device), group)
    if solver == "auto":
        solver = _auto_solver(n_items, dim_in, n_components)
    info = {"solver": solver, "n_items": n_items, "world_size": dist.get_world_size(group)}
    if solver == "exact":
        values, components = _top_eigenvectors(passes.gram(), n_components)
    else:
        block_values, block_vectors, steps = _subspace_iteration(
            _pass_operator(passes, None, 1.0, 0.0), dim_in, n_components, tol, max_iter, {}
        )
        values, components = block_values[:n_components], block_vectors[:, :n_components]
        info.update(steps)
    vectors = passes.project(components)
    total_variance = passes.total_variance()
    kept = float(_all_reduced([np.einsum("ij,ij->", vectors, vectors)], group)[0])
    info["retained_variance"] = kept / total_variance if total_variance > 0 else 1.0
    return np.asarray(vectors, dtype=np.float32), components, values, info


def _tokens_file(npy_path):
    """``vectors.npy`` -> ``vectors.tokens.txt``, the item tokens `precomputed_embeddings` pairs with it."""
    stem = npy_path[: -len(".npy")] if npy_path.endswith(".npy") else npy_path
    return stem + ".tokens.txt"


def main(argv=None):
    """``torchrun ... -m recbole_tfllmer.tfllmer.sharded_pca --input X.npy --output Z.npy``: every rank
    memory-maps its rows of ``--input`` and writes them into ``--output`` (created by rank 0, then
    renamed into place once every rank has written: a stopped run leaves no half-written file).
    ``vectors.tokens.txt`` beside the input is copied beside the output, so ``precomputed_embeddings:
    reduced.npy`` with ``item_init: pca`` starts a run from these vectors (PCA of centred principal
    components is the identity)."""
    import torch.distributed as dist

    parser = argparse.ArgumentParser(prog="python -m recbole_tfllmer.tfllmer.sharded_pca", description=__doc__)
    parser.add_argument("--input", required=True, help="an (n, D) .npy file of item vectors, readable by every rank")
    parser.add_argument("--output", required=True, help="the (n, d) float32 .npy file to write")
    parser.add_argument("--components", type=int, default=64, help="d, the backbone's embedding size")
    parser.add_argument("--row-normalize", action="store_true", help="L2-normalise rows before centring")
    parser.add_argument("--solver", default="auto", choices=["auto", "exact", "iterative"])
    parser.add_argument(
        "--device", default=None, help="a torch device for this rank's passes (default numpy; cuda = cuda:LOCAL_RANK)"
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        print(f"sharded_pca: error: --input {args.input!r} does not exist", file=sys.stderr)
        return 2
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    X = np.load(args.input, mmap_mode="r")
    rows = shard_rows(X.shape[0], rank, world)
    device = args.device
    if device == "cuda":  # one GPU per rank on its machine, as torchrun numbers them
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    vectors, _, _, info = sharded_pca(
        X[rows], args.components, row_normalize=args.row_normalize, solver=args.solver, device=device
    )
    partial = f"{args.output}.partial.npy"
    if rank == 0:
        np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(X.shape[0], args.components)).flush()
    dist.barrier()
    out = np.lib.format.open_memmap(partial, mode="r+")
    out[rows] = vectors
    out.flush()
    del out
    dist.barrier()
    if rank == 0:
        tokens = _tokens_file(args.input)
        if os.path.isfile(tokens):  # keep the bring-your-own pairing: reduced.npy + reduced.tokens.txt
            shutil.copyfile(tokens, _tokens_file(args.output) + ".partial")
            os.replace(_tokens_file(args.output) + ".partial", _tokens_file(args.output))
        os.replace(partial, args.output)
        print(
            f"{args.output}: {X.shape[0]} x {args.components} PCA vectors from {world} ranks "
            f"({info['solver']} solver, semantic variance kept {info['retained_variance']:.4f})"
        )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
