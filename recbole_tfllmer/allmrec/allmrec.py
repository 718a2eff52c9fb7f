r"""ALLMRec: A-LLMRec over a frozen collaborative backbone, evaluated on candidate lists.

Reference: Kim et al., "Large Language Models meet Collaborative Filtering: An Efficient
All-round LLM-based Recommender System", KDD 2024 (arXiv 2404.11343); the method as their
public code implements it is specified in seed-methods.md Part B.

`model: ALLMRec` with `allmrec_cf_checkpoint: <ID-only backbone .pth>`:
1. the collaborative model is loaded frozen (cf.py): item vectors e_i, user vectors s_u;
2. stage 1 (stage1.py) aligns e_i with the items' text vectors q_i in a joint latent z_i;
3. stage 2 (stage2.py, with `allmrec_llm`: a local causal LM) trains two projections that put
   s_u and the z_i of the history and the candidates into the frozen LM's prompt as soft tokens;
4. RecBole's candidate evaluation (`eval_args.mode: uni19`) calls `predict` on each user's 20
   candidates: the LM log-likelihood of each candidate's title after the prompt (or, without an
   LM, stage 1's recommendation logit). The trainer adds `hit@1_gen`, the paper's metric (the
   greedily generated title names the target).
"""

import random
import time

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import set_color

from recbole_tfllmer.allmrec.cf import FrozenCF, load_frozen_cf
from recbole_tfllmer.allmrec.stage1 import CollabTextAlignment, last_training_rows, sample_negatives, stage1_loss
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.options import plugin_options
from recbole_tfllmer.text.encoders import config_value
from recbole_tfllmer.text.hook import dataset_item_tokens, item_file_of, reader_options
from recbole_tfllmer.text.item_text import read_item_table

BETAS = (0.9, 0.98)  # Adam betas of both stages in their code


def item_titles(config, dataset, field):
    """Title of every internal item id ('No Title' where the .item file has none, as their code)."""
    try:
        table = read_item_table(item_file_of(config), dataset.iid_field, [field], **reader_options(config))
    except Exception as err:  # the reader's errors name the file; say which option chose the field
        raise ConfigError(f"option `allmrec_title_field` ({field!r}): {err}") from None
    return [""] + [(table.get(t) or {}).get(field) or "No Title" for t in dataset_item_tokens(dataset)[1:]]


class ALLMRec(SequentialRecommender):
    # It trains in stages (ALLMRecTrainer.fit): no per-batch RecBole loss, so nothing for the
    # leaderboard's Hessian diagnostic to differentiate.
    has_batch_loss = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.options = plugin_options(config).allmrec
        self.candidate_seed = int(config_value(config, "candidate_seed", 0))
        self.seed = int(config["seed"])
        cf_model, _ = load_frozen_cf(self.options.cf_checkpoint, dataset)
        self.cf = FrozenCF(cf_model, self.options.cf_mode)
        self.text_encoder = None
        if self.options.finetune_text_encoder:
            from recbole_tfllmer.allmrec.text_encoder import FineTunedTextEncoder

            self.text_encoder = FineTunedTextEncoder.from_config(config, dataset)
            text_dim = self.text_encoder.dim
        else:
            vectors = torch.from_numpy(np.asarray(dataset.item_text_embeddings, dtype=np.float32))
            self.register_buffer("text_vectors", vectors, persistent=False)
            text_dim = vectors.shape[1]
        self.alignment = CollabTextAlignment(self.cf.dim, text_dim, self.options.latent_dim)
        self.titles = item_titles(config, dataset, self.options.title_field)
        self.soft_prompt = None
        if self.options.llm:
            from recbole_tfllmer.allmrec.lm import load_causal_lm
            from recbole_tfllmer.allmrec.stage2 import SoftPromptRecommender

            lm = load_causal_lm(
                self.options.llm,
                dtype=self.options.llm_dtype,
                device=config["device"],
                load_in_8bit=self.options.llm_8bit,
                allow_download=bool(config_value(config, "text_allow_download", False)),
            )
            self.soft_prompt = SoftPromptRecommender(lm, self.cf.dim, self.options.latent_dim)
        trained = torch.zeros(self.n_items, dtype=torch.bool)
        item_seqs, _, targets = dataset.training_rows()
        trained[torch.as_tensor(item_seqs).flatten()] = True
        trained[torch.as_tensor(targets)] = True
        trained[0] = False
        self.register_buffer("trained_items", trained, persistent=False)  # items with collaborative signal
        self.generation_hits = None  # a list while the trainer collects hit@1_gen (test evaluation)
        self.logger_prefix = set_color("ALLMRec", "pink")

    # -- what both stages read ------------------------------------------------------------------
    def item_text_vectors(self, ids):
        return self.text_encoder(ids) if self.text_encoder is not None else self.text_vectors[ids]

    def joint_item_vectors(self):
        """z_i of every item (stage 1's item encoder on the frozen e_i), frozen for stage 2."""
        with torch.no_grad():
            return self.alignment.joint_item_vectors(self.cf.item_vectors)

    def joint_item_table(self):
        """(n_items, latent) A-LLMRec's joint collaborative-text item vectors as an item table for
        any backbone (`recbole-tfllmer export-item-table`): z_i = item encoder(e_i) for items seen in
        training, the text side t_i = text encoder(q_i) for items the collaborative model never
        trained on (their CF vector is its random initialisation). Row 0 stays zero."""
        with torch.no_grad():
            table = self.alignment.joint_item_vectors(self.cf.item_vectors)
            cold = torch.nonzero(~self.trained_items).flatten()
            cold = cold[cold > 0]
            if len(cold):
                table[cold] = self.alignment.text_encoder(self.item_text_vectors(cold))
            table[0] = 0
        return table

    def _user_samples(self, train_dataset):
        """One sample per user: the longest training row (history -> its target), and the items the
        user had in training (excluded from negatives and candidates)."""
        feat = train_dataset.inter_feat
        users = feat[self.USER_ID].numpy()
        rows = last_training_rows(users, feat[self.ITEM_SEQ_LEN].numpy())
        sample = feat[torch.as_tensor(rows)]
        seqs, lens, targets = sample[self.ITEM_SEQ].numpy(), sample[self.ITEM_SEQ_LEN].numpy(), sample[self.ITEM_ID]
        seen = [set(seqs[i, : lens[i]].tolist()) | {int(targets[i])} for i in range(len(rows))]
        return sample, seen

    # -- stage 1 ----------------------------------------------------------------------------------
    def train_stage1(self, train_dataset, log=print):
        """Stage 1's epochs (B.3): Adam over the two autoencoders (and the text encoder when it is
        fine-tuned); the collaborative model stays frozen. Returns the mean loss per epoch."""
        opts = self.options
        sample, seen = self._user_samples(train_dataset)
        params = list(self.alignment.parameters())
        if self.text_encoder is not None:
            params += [p for p in self.text_encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=opts.stage1_lr, betas=BETAS)
        rng = np.random.default_rng(self.seed)
        fixed_users = self.cf.user_vectors(sample) if opts.cf_mode == "eval" else None
        losses = []
        self.train()
        for epoch in range(opts.stage1_epochs):
            started, total, steps = time.perf_counter(), 0.0, 0
            negatives = torch.as_tensor(sample_negatives(rng, self.n_items, seen))
            for start in range(0, len(seen), opts.stage1_batch_size):  # not shuffled, as their code
                rows = slice(start, start + opts.stage1_batch_size)
                users = fixed_users[rows] if fixed_users is not None else self.cf.user_vectors(sample[rows])
                loss, _ = self._stage1_batch(users, sample[self.ITEM_ID][rows], negatives[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, steps = total + float(loss.detach()), steps + 1
            losses.append(total / max(steps, 1))
            log(
                f"stage 1 epoch {epoch}: loss {losses[-1]:.4f} over {steps} steps in {time.perf_counter() - started:.1f} s"
            )
        return losses

    def _stage1_batch(self, users, positives, negatives):
        items = self.cf.item_vectors
        ones, zeros = torch.ones(len(positives)), torch.zeros(len(negatives))
        pos = self.alignment.losses(users, items[positives], self.item_text_vectors(positives), ones)
        neg = self.alignment.losses(users, items[negatives], self.item_text_vectors(negatives), zeros)
        return stage1_loss(pos, neg, self.options.recon_item_weight, self.options.recon_text_weight)

    # -- stage 2 ----------------------------------------------------------------------------------
    def _candidates(self, rng, target, seen):
        """The target + N - 1 items outside the user's items, in a random order (B.7 #6)."""
        negatives = set()
        while len(negatives) < self.options.num_candidates - 1:
            item = int(rng.integers(1, self.n_items))
            if item not in seen:
                negatives.add(item)
        candidates = [int(target), *sorted(negatives)]
        rng.shuffle(candidates)
        return candidates

    def _prompt_inputs(self, z, user_vec, history, candidates):
        from recbole_tfllmer.allmrec.prompts import build_prompt

        history = history[-self.options.history_len :]
        prompt = build_prompt(
            [self.titles[i] for i in history], [self.titles[i] for i in candidates], self.options.domain
        )
        return user_vec, z[torch.as_tensor(history)], z[torch.as_tensor(candidates)], prompt

    def train_stage2(self, train_dataset, log=print):
        """Stage 2's epochs (B.4): only the two projections train, on the title of each user's
        last training item, with candidates drawn by a seeded generator."""
        from recbole_tfllmer.allmrec.prompts import target_text
        from recbole_tfllmer.allmrec.stage2 import train_stage2

        if self.soft_prompt is None:
            return []
        opts = self.options
        sample, seen = self._user_samples(train_dataset)
        z = self.joint_item_vectors()
        self.cf.train(opts.cf_mode == "train")
        users = self.cf.user_vectors(sample)
        seqs, lens, targets = sample[self.ITEM_SEQ].numpy(), sample[self.ITEM_SEQ_LEN].numpy(), sample[self.ITEM_ID]
        order = list(range(len(seen)))

        def batches(epoch):
            rng = np.random.default_rng([self.seed, epoch])
            random.Random(self.seed + epoch).shuffle(order)  # users shuffled, as their code
            for start in range(0, len(order), opts.stage2_batch_size):
                chunk = order[start : start + opts.stage2_batch_size]
                parts = [
                    self._prompt_inputs(
                        z, users[i], seqs[i, : lens[i]].tolist(), self._candidates(rng, targets[i], seen[i])
                    )
                    for i in chunk
                ]
                yield {
                    "user_vecs": torch.stack([p[0] for p in parts]),
                    "history_vecs": [p[1] for p in parts],
                    "candidate_vecs": [p[2] for p in parts],
                    "prompts": [p[3] for p in parts],
                    "targets": [target_text(self.titles[int(targets[i])]) for i in chunk],  # '"title"' (+ EOS)
                }

        return train_stage2(self.soft_prompt, batches, opts.stage2_epochs, lr=opts.stage2_lr, betas=BETAS, log=log)

    # -- RecBole's interface ----------------------------------------------------------------------
    def calculate_loss(self, interaction):
        raise ConfigError("ALLMRec trains in its two stages (ALLMRecTrainer.fit), not per RecBole batch")

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """Stage 1 alone scores every item with its recommendation head <s_u, decoder(encoder(e_i))> / d
        (the full-ranking boards' `ALLMRec-stage1` row); with an LLM it ranks only its prompt's candidates."""
        if self.soft_prompt is not None:
            raise ConfigError(
                "A-LLMRec with an LLM ranks the candidate list of its prompt, not every item: evaluate it with "
                "`eval_args.mode: uni19` (or drop `allmrec_llm` to rank every item with stage 1's head)"
            )
        users = self.cf.user_vectors(interaction)
        items = self.alignment.item_decoder(self.alignment.item_encoder(self.cf.item_vectors))
        return users @ items.T / self.alignment.cf_dim

    def _candidate_blocks(self, interaction):
        """RecBole's uniN rows come per user, the positive first: (n_users, N) item ids."""
        n = self.options.num_candidates
        items, users = interaction[self.ITEM_ID], interaction[self.USER_ID]
        if len(items) % n or not torch.all(users.view(-1, n) == users.view(-1, n)[:, :1]):
            raise ConfigError(
                f"ALLMRec expects each user's {n} candidates together (eval_args.mode uni{n - 1}); got {len(items)} "
                "rows that do not split that way"
            )
        return items.view(-1, n), torch.arange(0, len(items), n)

    @torch.no_grad()
    def predict(self, interaction):
        blocks, first_rows = self._candidate_blocks(interaction)
        users = self.cf.user_vectors(interaction[first_rows])
        if self.soft_prompt is None:  # stage 1 only: its recommendation head ranks the candidates
            return self.alignment.recommendation_scores(users, self.cf.item_vectors[blocks]).reshape(-1)
        from recbole_tfllmer.allmrec.candidates import candidate_log_likelihoods, generate_title
        from recbole_tfllmer.allmrec.prompts import generated_hit

        z = self.joint_item_vectors()
        scores = torch.empty(blocks.shape, dtype=torch.float32)
        for b, row in enumerate(first_rows.tolist()):
            user_id = int(interaction[self.USER_ID][row])
            order = blocks[b].tolist()
            random.Random(self.candidate_seed * 1_000_003 + user_id).shuffle(order)  # the prompt's order
            history = interaction[self.ITEM_SEQ][row, : interaction[self.ITEM_SEQ_LEN][row]].tolist()
            user_vec, hist, cands, prompt = self._prompt_inputs(z, users[b], history, order)
            loglik = candidate_log_likelihoods(
                self.soft_prompt, user_vec, hist, cands, prompt, [self.titles[i] for i in order]
            )
            by_item = dict(zip(order, loglik.float().cpu().tolist()))
            scores[b] = torch.tensor([by_item[i] for i in blocks[b].tolist()])
            if self.generation_hits is not None:
                text = generate_title(
                    self.soft_prompt,
                    user_vec,
                    hist,
                    cands,
                    prompt,
                    max_new_tokens=self.options.max_new_tokens,
                    repetition_penalty=self.options.repetition_penalty,
                )
                self.generation_hits.append(bool(generated_hit(text, self.titles[int(blocks[b, 0])])))
        return scores.reshape(-1).to(interaction[self.ITEM_ID].device)
