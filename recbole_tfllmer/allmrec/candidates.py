"""Scoring a user's candidate set with the stage-2 model (spec B.5, C.4 `candidates.py`).

likelihood: the score of candidate c is log P(`"title_c"` + EOS | soft user token, prompt),
summed over its tokens. Every candidate shares the same prefix, so the prefix is encoded once
and its KV cache is repeated across the C continuations, which are then scored in one batch:
the cost is one long forward plus one short batched one, instead of C long forwards.
`candidate_log_likelihoods_uncached` is the plain definition, kept as the reference the
cached path is tested against.

generate: A-LLMRec's own evaluation, greedy decoding with a repetition penalty; the caller
applies `prompts.generated_hit` to the text.
"""

import contextlib

import torch

from recbole_tfllmer.allmrec.prompts import target_text


@contextlib.contextmanager
def scoring_mode(module):
    """Eval mode and no autograd while scoring; the module's previous mode is restored."""
    was_training = module.training
    module.eval()
    module.lm.model.eval()
    try:
        with torch.inference_mode(), module.lm_autocast():
            yield
    finally:
        module.train(was_training)


def _one_user(module, user_vec, history_vecs, candidate_vecs, prompt, targets=None):
    """`module.assemble` for a single user (batch of one)."""
    users = torch.as_tensor(user_vec).reshape(1, -1)
    return module.assemble(users, [history_vecs], [candidate_vecs], [prompt], targets)


def continuation_ids(lm, titles):
    """(C, T) right-padded ids of `"title"` + EOS per candidate and their (C, T) mask of real tokens."""
    rows = [lm.tokenizer(target_text(title), add_special_tokens=False)["input_ids"] + [lm.eos_id] for title in titles]
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), lm.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return ids.to(lm.device), mask.to(lm.device)


def repeat_cache(cache, copies):
    """The prefix KV cache of batch 1 repeated to `copies` rows (in place for `Cache` objects)."""
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(copies)
        return cache
    from transformers import DynamicCache  # a legacy tuple-of-tuples cache

    legacy = tuple(tuple(t.repeat_interleave(copies, dim=0) for t in layer) for layer in cache)
    return DynamicCache.from_legacy_cache(legacy)


def _token_log_probs(logits, token_ids):
    """log P(token_ids[b, j]) under logits[b, j] (float32)."""
    return logits.float().log_softmax(-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def candidate_log_likelihoods(module, user_vec, history_vecs, candidate_vecs, prompt, candidate_titles):
    """(C,) float32 scores on the LM's device: sum of the log-probabilities of each candidate's
    quoted title + EOS after the shared prefix, with the prefix encoded once (KV cache)."""
    lm = module.lm
    with scoring_mode(module):
        inputs_embeds, attention_mask, _ = _one_user(module, user_vec, history_vecs, candidate_vecs, prompt)
        prefix = lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=True)
        ids, mask = continuation_ids(lm, candidate_titles)
        first = _token_log_probs(prefix.logits[:, -1:].expand(len(ids), -1, -1), ids[:, :1]).squeeze(1)
        if ids.shape[1] == 1:
            return first
        cache = repeat_cache(prefix.past_key_values, len(ids))
        # the last continuation token only ever gets predicted, so it is not fed in
        full_mask = torch.cat([attention_mask.expand(len(ids), -1), mask[:, :-1]], dim=1)
        rest = lm.model(
            inputs_embeds=lm.embed(ids[:, :-1]), attention_mask=full_mask, past_key_values=cache, use_cache=True
        ).logits
        later = _token_log_probs(rest, ids[:, 1:]).masked_fill(mask[:, 1:] == 0, 0.0)
        return first + later.sum(1)


def candidate_log_likelihoods_uncached(module, user_vec, history_vecs, candidate_vecs, prompt, candidate_titles):
    """The same scores by definition: one full forward (prefix + target) per candidate."""
    lm = module.lm
    scores = []
    with scoring_mode(module):
        for title in candidate_titles:
            inputs_embeds, attention_mask, labels = _one_user(
                module, user_vec, history_vecs, candidate_vecs, prompt, [target_text(title)]
            )
            logits = lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
            labels = labels[:, 1:]
            scored = labels != -100
            scores.append(_token_log_probs(logits[:, :-1][scored], labels[scored]).sum())
    return torch.stack(scores)


def generate_titles(
    module, user_vecs, history_vecs, candidate_vecs, prompts, max_new_tokens=64, repetition_penalty=1.5
):
    """Greedy generations for a batch (left-padded, so every row continues right after its prompt)."""
    lm = module.lm
    with scoring_mode(module):
        inputs_embeds, attention_mask, _ = module.assemble(
            user_vecs, history_vecs, candidate_vecs, prompts, padding_side="left"
        )
        generated = lm.model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=repetition_penalty,
            eos_token_id=lm.eos_id,
            pad_token_id=lm.pad_id,
        )
    return lm.tokenizer.batch_decode(generated, skip_special_tokens=True)


def generate_title(module, user_vec, history_vecs, candidate_vecs, prompt, max_new_tokens=64, repetition_penalty=1.5):
    """A-LLMRec's answer for one user: greedy, `repetition_penalty` 1.5, special tokens skipped."""
    users = torch.as_tensor(user_vec).reshape(1, -1)
    return generate_titles(
        module, users, [history_vecs], [candidate_vecs], [prompt], max_new_tokens, repetition_penalty
    )[0]
