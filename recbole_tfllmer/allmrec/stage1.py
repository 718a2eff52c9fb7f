"""A-LLMRec stage 1, collaborative-text alignment (seed-methods B.3).

Two autoencoders meet in one latent space: the item encoder takes the frozen collaborative
item vector e_i, the text encoder the text vector q_i of the item. Their latents are matched
(MSE), each decoder reconstructs its input, and a recommendation term keeps the decoded item
vector useful to the frozen user representation s_u:

    L1 = L_rec + L_match + w_item * L_item + w_text * L_text        (w = 0.5, 0.2)

each term summed over the user's positive item (the last training item) and one negative
drawn uniformly from the items the user never had in training. z_i = item encoder(e_i) is
A-LLMRec's joint collaborative-text item embedding; stage 2 reads it frozen.
"""

import numpy as np
from torch import nn
from torch.nn import functional as F


def _mlp(dim_in, dim_out, activation=None):
    layers = [nn.Linear(dim_in, dim_out)]
    if activation is not None:
        layers.append(activation)
    return nn.Sequential(*layers)


class CollabTextAlignment(nn.Module):
    """Item and text autoencoders (B.3 'Networks'): encoders sigmoid(W x + b), linear decoders."""

    def __init__(self, cf_dim, text_dim, latent_dim=128):
        super().__init__()
        self.item_encoder = _mlp(cf_dim, latent_dim, nn.Sigmoid())
        self.item_decoder = _mlp(latent_dim, cf_dim)
        self.text_encoder = _mlp(text_dim, latent_dim, nn.Sigmoid())
        self.text_decoder = _mlp(latent_dim, text_dim)
        self.cf_dim = cf_dim

    def joint_item_vectors(self, item_vectors):
        """z_i for (n, cf_dim) collaborative vectors."""
        return self.item_encoder(item_vectors)

    def losses(self, user_vecs, item_vecs, text_vecs, labels):
        """The four stage-1 terms for one item per user (`labels` 1 = positive, 0 = negative), each a
        batch mean; the text target is detached (their code), the frozen inputs need no grad."""
        z_item = self.item_encoder(item_vecs)
        z_text = self.text_encoder(text_vecs)
        item_rec = self.item_decoder(z_item)
        text_rec = self.text_decoder(z_text)
        logits = (user_vecs * item_rec).sum(-1) / self.cf_dim  # the mean of the product (B.3, B.7 #3)
        return {
            "rec": F.binary_cross_entropy_with_logits(logits, labels),
            "match": F.mse_loss(z_item, z_text),
            "item": F.mse_loss(item_rec, item_vecs),
            "text": F.mse_loss(text_rec, text_vecs.detach()),
        }

    def recommendation_scores(self, user_vecs, item_vecs):
        """(B, C) stage-1 logits <s_u, decoder(encoder(e_i))> / d for candidate item vectors (B, C, d)."""
        decoded = self.item_decoder(self.item_encoder(item_vecs))
        return (user_vecs.unsqueeze(1) * decoded).sum(-1) / self.cf_dim


def stage1_loss(terms_pos, terms_neg, recon_item_weight, recon_text_weight):
    """L1 = L_rec + L_match + w_item L_item + w_text L_text, each summed over i+ and i-."""
    total = {k: terms_pos[k] + terms_neg[k] for k in terms_pos}
    return total["rec"] + total["match"] + recon_item_weight * total["item"] + recon_text_weight * total["text"], total


def last_training_rows(user_ids, seq_lens):
    """Index of each user's longest training row (their code's one sample per user: the whole
    training sequence but its last item, predicting that item), users in ascending id order."""
    order = np.lexsort((seq_lens, user_ids))  # by user, then by length
    last = np.r_[user_ids[order][1:] != user_ids[order][:-1], True]
    return order[last]


def sample_negatives(rng, n_items, seen_per_row):
    """One item per row, uniform over 1..n_items-1 and outside that row's `seen` set."""
    out = np.empty(len(seen_per_row), dtype=np.int64)
    for i, seen in enumerate(seen_per_row):
        while True:
            item = int(rng.integers(1, n_items))
            if item not in seen:
                out[i] = item
                break
    return out
