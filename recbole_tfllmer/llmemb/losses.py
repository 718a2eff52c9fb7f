"""In-batch contrastive losses of LLMEmb (spec A.2.3, A.7 #1).

Both take two (B, D) batches whose row i are two views of the same item (SCFT) or an item's
two representations (RAT alignment); the other rows of the batch are the negatives.
"""

import torch
import torch.nn.functional as F

from recbole_tfllmer.errors import ConfigError

LOSSES = ("soft_clip", "infonce")


def _check_pair(a, b):
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"contrastive loss needs two (B, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def soft_clip_contrastive(a, b, tau):
    """LLMEmb's "soft CLIP" loss, exactly as their code computes it (spec A.2.3).

    Logits are raw dot products over tau; the targets are a row softmax of tau times the mean
    self-similarity of the two sides, so items that look alike are not pushed apart as hard
    negatives. tau *divides* the logits but *multiplies* inside the targets, as in the code.
    The column term reads the columns of the row-normalised targets (they need not sum to 1).
    Nothing is detached: gradients reach a, b and tau (a float or a 0-dim tensor) through
    both the logits and the targets.
    """
    _check_pair(a, b)
    logits = a @ b.T / tau
    targets = F.softmax(tau * 0.5 * (a @ a.T + b @ b.T), dim=1)
    row_term = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    column_term = -(targets * F.log_softmax(logits, dim=0)).sum(dim=0).mean()
    return 0.5 * (row_term + column_term)


def info_nce(a, b, tau, cosine=True):
    """Symmetric InfoNCE with hard diagonal targets: the clean reference form (spec A.7 #1).

    Cosine similarity by default, so tau is an ordinary temperature (0.05 is usual).
    """
    _check_pair(a, b)
    if cosine:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / tau
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def contrastive_loss(name, a, b, tau):
    """The loss named by `scft_loss` / `llmemb_align_loss`."""
    if name == "soft_clip":
        return soft_clip_contrastive(a, b, tau)
    if name == "infonce":
        return info_nce(a, b, tau)
    raise ConfigError(f"contrastive loss {name!r} is unknown; choose one of {', '.join(LOSSES)}.")
