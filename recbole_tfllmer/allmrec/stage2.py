"""A-LLMRec stage 2: soft prompt tokens for a frozen causal LM (spec B.4, C.4 `stage2.py`).

Two small MLPs are the only trained weights. F_U maps the CF user representation s_u to one
soft token put in front of the prompt; F_I maps each item's joint collaborative-text vector
z_i to the soft token that replaces its `[HistoryEmb]` / `[CandidateEmb]` marker. The LM
learns nothing: it is held by reference, outside the module tree, so `parameters()`,
`state_dict()` and `.train()` only ever touch F_U and F_I (a checkpoint is a few MB, not the
LM, and switching the recommender to train mode never turns the LM's dropout on).
"""

import contextlib
import logging
import math
import time

import torch
from torch import nn

from recbole_tfllmer.allmrec.prompts import CANDIDATE_MARKER, HISTORY_MARKER

IGNORE_INDEX = -100  # label of every position that is not a target token
BATCH_KEYS = ("user_vecs", "history_vecs", "candidate_vecs", "prompts", "targets")


def _xavier_linears(mlp):
    """Xavier-normal Linear weights as in A-LLMRec; biases and LayerNorm keep PyTorch's defaults."""
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
    return mlp


def user_projection(user_dim, hidden):
    """F_U: s_u -> one soft token."""
    return _xavier_linears(
        nn.Sequential(nn.Linear(user_dim, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, hidden))
    )


def item_projection(item_dim, hidden):
    """F_I: z_i -> the soft token at the item's marker."""
    return _xavier_linears(
        nn.Sequential(nn.Linear(item_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
    )


def _count_check(prompt_ids, marker_id, vectors, marker, row):
    found = sum(1 for token_id in prompt_ids if token_id == marker_id)
    if found != len(vectors):
        raise ValueError(
            f"A-LLMRec prompt {row} has {found} {marker} markers but {len(vectors)} item vectors were given; "
            f"build the prompt with prompts.build_prompt from the same items (a title containing {marker} "
            f"also breaks the count)."
        )


def _move_left(rows, mask):
    """Right-padded (B, L, ...) rows -> left-padded, using each row's real length from `mask`."""
    length = mask.shape[1]
    shift = length - mask.sum(1, keepdim=True)
    index = (torch.arange(length, device=mask.device).unsqueeze(0) - shift) % length
    if rows.dim() == 3:
        index = index.unsqueeze(-1).expand_as(rows)
    return rows.gather(1, index)


def next_token_loss(logits, labels):
    """Mean causal-LM cross-entropy over the labelled (target) positions only; the logits are
    upcast to float32 only at those positions, so the full-vocabulary softmax stays cheap."""
    labels = labels[:, 1:].to(logits.device)
    scored = labels != IGNORE_INDEX
    return nn.functional.cross_entropy(logits[:, :-1][scored].float(), labels[scored])


class SoftPromptRecommender(nn.Module):
    """F_U and F_I around a frozen LM; `assemble` builds the LM inputs, `loss` trains on them."""

    def __init__(self, frozen_lm, user_dim, item_dim):
        super().__init__()
        object.__setattr__(self, "_frozen_lm", frozen_lm)  # a plain attribute: never a submodule
        hidden = frozen_lm.hidden_size
        self.user_dim, self.item_dim, self.hidden_size = int(user_dim), int(item_dim), hidden
        self.user_projection = user_projection(self.user_dim, hidden)
        self.item_projection = item_projection(self.item_dim, hidden)
        self.to(frozen_lm.device)

    @property
    def lm(self):
        return self._frozen_lm

    @property
    def device(self):
        return torch.device(self.lm.device)

    def lm_autocast(self):
        """Half-precision autocast on CUDA when the LM is half (or int8 with half compute), as the
        original forward ran under fp16 autocast; the projections themselves stay float32."""
        half = self.lm.dtype in (torch.bfloat16, torch.float16)
        if half and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=self.lm.dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ input assembly
    def _token_rows(self, prompts, targets, history_vecs, candidate_vecs):
        """Per example: (prompt ids with the tokenizer's own special tokens, target ids + EOS)."""
        tokenizer, ids = self.lm.tokenizer, self.lm.marker_ids
        rows = []
        for row, prompt in enumerate(prompts):
            prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            _count_check(prompt_ids, ids[HISTORY_MARKER], history_vecs[row], HISTORY_MARKER, row)
            _count_check(prompt_ids, ids[CANDIDATE_MARKER], candidate_vecs[row], CANDIDATE_MARKER, row)
            target_ids = []
            if targets is not None:
                target_ids = tokenizer(targets[row], add_special_tokens=False)["input_ids"] + [self.lm.eos_id]
            rows.append((prompt_ids, target_ids))
        return rows

    def _check_length(self, length):
        limit = getattr(self.lm.model.config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise ValueError(
                f"A-LLMRec input of {length} positions exceeds the LM's max_position_embeddings ({limit}); "
                f"lower `allmrec_history_len` / `allmrec_num_candidates` or use an LM with a longer context."
            )

    def _padded_ids(self, rows):
        """(B, L) token ids, right-padded, and the (B, L) mask of real tokens."""
        length = max(len(p) + len(t) for p, t in rows)
        self._check_length(length + 1)
        ids = torch.full((len(rows), length), self.lm.pad_id, dtype=torch.long)
        real = torch.zeros((len(rows), length), dtype=torch.long)
        for row, (prompt_ids, target_ids) in enumerate(rows):
            tokens = prompt_ids + target_ids
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            real[row, : len(tokens)] = 1
        return ids.to(self.device), real.to(self.device)

    def _item_vectors(self, per_row):
        """All rows' item vectors stacked in row order (the order `nonzero` finds the markers in)."""
        blocks = [torch.as_tensor(v).reshape(-1, self.item_dim) for v in per_row]
        return torch.cat(blocks).to(self.device, torch.float32)

    def _put_item_tokens(self, embeds, ids, history_vecs, candidate_vecs):
        """Replace the k-th history / candidate marker of each row by F_I of its k-th vector."""
        for marker, per_row in ((HISTORY_MARKER, history_vecs), (CANDIDATE_MARKER, candidate_vecs)):
            rows, cols = (ids == self.lm.marker_ids[marker]).nonzero(as_tuple=True)
            if len(rows):
                soft = self.item_projection(self._item_vectors(per_row)).to(embeds.dtype)
                embeds = embeds.index_put((rows, cols), soft)
        return embeds

    def _labels(self, rows, length):
        """-100 everywhere except the target tokens (+EOS); position 0 is the soft user token."""
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for row, (prompt_ids, target_ids) in enumerate(rows):
            start = 1 + len(prompt_ids)
            labels[row, start : start + len(target_ids)] = torch.tensor(target_ids, dtype=torch.long)
        return labels.to(self.device)

    def assemble(self, user_vecs, history_vecs, candidate_vecs, prompts, targets=None, padding_side="right"):
        """LM inputs for B examples: (inputs_embeds (B, 1+L, H), attention_mask (B, 1+L), labels or None).

        Row layout: F_U(s_u), then the prompt tokens (history / candidate markers replaced by
        F_I of their vectors), then the target tokens + EOS when `targets` is given, then pads.
        `padding_side="left"` moves the pads in front (batched generation); labels are for the
        right-padded training layout."""
        if len(history_vecs) != len(prompts) or len(candidate_vecs) != len(prompts):
            raise ValueError(
                f"A-LLMRec batch: {len(prompts)} prompts but {len(history_vecs)} history and "
                f"{len(candidate_vecs)} candidate vector sets; give one of each per prompt."
            )
        rows = self._token_rows(prompts, targets, history_vecs, candidate_vecs)
        ids, real = self._padded_ids(rows)
        embeds = self._put_item_tokens(self.lm.embed(ids), ids, history_vecs, candidate_vecs)
        users = torch.as_tensor(user_vecs).reshape(len(prompts), self.user_dim).to(self.device, torch.float32)
        user_tokens = self.user_projection(users).to(embeds.dtype).unsqueeze(1)
        inputs_embeds = torch.cat([user_tokens, embeds], dim=1)
        attention_mask = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        labels = self._labels(rows, attention_mask.shape[1]) if targets is not None else None
        if padding_side == "left":
            inputs_embeds = _move_left(inputs_embeds, attention_mask)
            labels = _move_left(labels, attention_mask) if labels is not None else None
            attention_mask = _move_left(attention_mask, attention_mask)
        elif padding_side != "right":
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        return inputs_embeds, attention_mask, labels

    # ------------------------------------------------------------------ training
    def loss(self, user_vecs, history_vecs, candidate_vecs, prompts, targets):
        """Mean next-token cross-entropy over the target tokens only (prompt, pads and soft user
        token are unlabelled): the LM is asked to write the target's quoted title and stop."""
        with self.lm_autocast():
            inputs_embeds, attention_mask, labels = self.assemble(
                user_vecs, history_vecs, candidate_vecs, prompts, targets
            )
            logits = self.lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits
        return next_token_loss(logits, labels)


def train_stage2(module, batches, epochs, lr=1e-4, betas=(0.9, 0.98), log_every=None, log=None):
    """Adam over F_U and F_I (the LM has no trainable parameters and stays in eval mode).

    `batches(epoch)` yields dicts with `BATCH_KEYS`; the caller owns shuffling and candidate
    sampling, so a resumed or repeated run sees the same batches. Returns the mean loss of
    each epoch; `log` gets one line per epoch (on a CPU an epoch of a real LM takes minutes)."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, betas=betas)
    was_training = module.training
    module.train()
    module.lm.model.eval()
    epoch_losses = []
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            mean, steps = _train_epoch(module, optimizer, batches(epoch), epoch, log_every)
            epoch_losses.append(mean)
            if log is not None:
                log(
                    f"stage 2 epoch {epoch}: loss {mean:.4f} over {steps} steps in {time.perf_counter() - started:.1f} s"
                )
    finally:
        module.train(was_training)
    return epoch_losses


def _train_epoch(module, optimizer, batches, epoch, log_every):
    total, steps = 0.0, 0
    for batch in batches:
        loss = module.loss(**{key: batch[key] for key in BATCH_KEYS})
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"A-LLMRec stage-2 loss is {value} at epoch {epoch}, step {steps}; lower `allmrec_stage2_lr` "
                f"or use `allmrec_llm_dtype: bfloat16` / float32."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + value, steps + 1
        if log_every and steps % log_every == 0:
            logging.getLogger().info(f"A-LLMRec stage 2: epoch {epoch} step {steps} loss {total / steps:.4f}")
    if steps == 0:
        raise ValueError(f"A-LLMRec stage 2: epoch {epoch} had no batches; the training users must not be empty.")
    return total / steps, steps
