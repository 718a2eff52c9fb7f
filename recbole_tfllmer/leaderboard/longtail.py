"""Per-user ranks of the test target and NDCG@k by item-popularity bucket (long tail).

`full_sort_ranks` repeats what RecBole's Trainer.evaluate does for a full-ranking loader:
the same `trainer._full_sort_batch_eval` (model.full_sort_predict, padding column and
history masked to -inf) and the same `torch.topk(scores, max(topk))` as RecBole's
Collector, so ties break identically and the mean NDCG@k over users equals RecBole's.
"""

import math

import numpy as np
import torch


@torch.no_grad()
def full_sort_ranks(trainer, eval_data, max_k):
    """(ranks, target_item_ids, user_ids): 1-based rank of each evaluation row's target item.

    Ranks up to `max_k` come from torch.topk exactly as RecBole's Collector; beyond it the
    rank is 1 + #items scored strictly higher (at least max_k + 1).
    """
    from recbole.data.dataloader import FullSortEvalDataLoader

    if not isinstance(eval_data, FullSortEvalDataLoader):
        raise TypeError("full_sort_ranks needs a full-ranking loader (eval_args.mode: full)")
    model = trainer.model
    model.eval()
    trainer.tot_item_num = eval_data._dataset.item_num
    ranks, targets, users = [], [], []
    uid_field = eval_data._dataset.uid_field
    for batched_data in eval_data:
        _, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batched_data)
        n_rows = scores.shape[0]
        if positive_u.numel() != n_rows or not torch.equal(positive_u.cpu(), torch.arange(n_rows)):
            raise ValueError("expected exactly one target per evaluation row (leave-one-out sequential data)")
        positive_i = positive_i.to(scores.device)
        _, topk_idx = torch.topk(scores, max_k, dim=-1)
        hit = topk_idx == positive_i.unsqueeze(1)
        in_top = hit.any(dim=1)
        top_rank = hit.float().argmax(dim=1) + 1
        target_scores = scores.gather(1, positive_i.unsqueeze(1))
        beyond = (scores > target_scores).sum(dim=1) + 1
        beyond = torch.clamp(beyond, min=max_k + 1)
        rank = torch.where(in_top, top_rank, beyond)
        ranks.append(rank.cpu())
        targets.append(positive_i.cpu())
        users.append(batched_data[0][uid_field].cpu())
    return tuple(torch.cat(x).numpy().astype(np.int64) for x in (ranks, targets, users))


def ndcg_at_k(ranks, k):
    """Per-row NDCG@k for one relevant item at 1-based `ranks`."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def hit_at_k(ranks, k):
    return (np.asarray(ranks) <= k).astype(np.float64)


def popularity_buckets(popularity, n_buckets):
    """Bucket index (0 = least popular) per row: rows sorted by (popularity, position), split into
    `n_buckets` groups of equal size (np.array_split: sizes differ by at most one)."""
    popularity = np.asarray(popularity)
    order = np.lexsort((np.arange(len(popularity)), popularity))
    buckets = np.empty(len(popularity), dtype=np.int64)
    for b, rows in enumerate(np.array_split(order, n_buckets)):
        buckets[rows] = b
    return buckets


def bucket_metrics(ranks, target_popularity, n_buckets=5, k=10):
    """NDCG@k and HR@k per popularity bucket of the test targets (least popular first)."""
    ranks = np.asarray(ranks)
    target_popularity = np.asarray(target_popularity)
    buckets = popularity_buckets(target_popularity, n_buckets)
    ndcg = ndcg_at_k(ranks, k)
    hit = hit_at_k(ranks, k)
    out = []
    for b in range(n_buckets):
        mask = buckets == b
        if not mask.any():
            out.append(
                {"bucket": b, "n": 0, "pop_min": None, "pop_max": None, f"ndcg@{k}": math.nan, f"hit@{k}": math.nan}
            )
            continue
        out.append(
            {
                "bucket": b,
                "n": int(mask.sum()),
                "pop_min": int(target_popularity[mask].min()),
                "pop_max": int(target_popularity[mask].max()),
                f"ndcg@{k}": float(ndcg[mask].mean()),
                f"hit@{k}": float(hit[mask].mean()),
            }
        )
    return out


def training_popularity(train_dataset):
    """Times each item id is a training target (every training interaction but each user's first)."""
    items = train_dataset.inter_feat[train_dataset.iid_field].numpy()
    return np.bincount(items, minlength=train_dataset.item_num)
