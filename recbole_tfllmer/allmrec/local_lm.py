"""A small causal LM trained here on the catalogue's own item text: the stand-in for A-LLMRec's
frozen LLM where no pretrained weights can be loaded (offline, no GPU).

A-LLMRec's LLM knows item titles from pre-training, not the users' interactions. This LM is
trained the same way: on every item's text line (the data hook's text) and on its quoted title,
the form the prompts show (``prompts.target_text``), never on interaction data, so stage 2's
soft prompts still do all of the recommending. It is an OPT of the given size with the bundled
MiniLM tokenizer and room for the three markers, seeded, trained with AdamW on next-token loss,
and written atomically as an ``AutoModelForCausalLM`` directory that ``allmrec_llm`` accepts.

    recbole-tfllmer train-local-lm --config_files "properties/ml-100k.yaml" \\
        --out ~/.cache/recbole_tfllmer/local-lm/ml-100k --title-field movie_title
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

from recbole_tfllmer.allmrec.prompts import MARKERS, target_text


@dataclass(frozen=True)
class LocalLMRecipe:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_length: int = 64
    seed: int = 0


def training_lines(item_texts, titles):
    """The LM's corpus: each item's text line and its quoted title (items without either are skipped)."""
    lines = [text for text in item_texts if text]
    lines += [target_text(title) for title in titles if title and title != "No Title"]
    return lines


def _batches(ids, batch_size, pad_id, rng):
    import torch

    order = list(range(len(ids)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [ids[i] for i in order[start : start + batch_size]]
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, : len(row)] = torch.tensor(row)
            labels[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
        yield input_ids, mask, labels


def train_local_lm(lines, out_dir, recipe=None, log=print):
    """Train an OPT on ``lines`` and save it (model + tokenizer) to ``out_dir``; returns a report.

    The directory appears only when complete (written beside it, then renamed), so a stopped run
    leaves no half-written model that ``allmrec_llm`` would load."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from recbole_tfllmer.text.encoders import bundled_model_dir

    recipe = recipe or LocalLMRecipe()
    if not lines:
        raise ValueError("no item text to train the local LM on")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    eos = tokenizer.sep_token_id  # BERT's tokenizer has no EOS: lm.py uses SEP the same way
    ids = [tokenizer(line, add_special_tokens=False)["input_ids"][: recipe.max_length - 1] + [eos] for line in lines]
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    config = OPTConfig(
        vocab_size=len(tokenizer) + len(MARKERS),
        hidden_size=recipe.hidden,
        num_hidden_layers=recipe.layers,
        ffn_dim=4 * recipe.hidden,
        num_attention_heads=recipe.heads,
        max_position_embeddings=2048,
        word_embed_proj_dim=recipe.hidden,
        pad_token_id=tokenizer.pad_token_id,
        dropout=0.0,
    )
    model = OPTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    steps = recipe.epochs * math.ceil(len(ids) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=steps, pct_start=0.05)
    losses = []
    model.train()
    for epoch in range(recipe.epochs):
        total, count = 0.0, 0
        for input_ids, mask, labels in _batches(ids, recipe.batch_size, tokenizer.pad_token_id, rng):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * len(input_ids), count + len(input_ids)
        losses.append(total / count)
        log(f"local LM epoch {epoch}: next-token loss {losses[-1]:.4f}")
    model.eval()
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".local-lm-", dir=parent)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        report = {
            "recipe": asdict(recipe),
            "lines": len(lines),
            "tokens": sum(len(r) for r in ids),
            "parameters": sum(p.numel() for p in model.parameters()),
            "epoch_losses": losses,
            "seconds": time.perf_counter() - started,
        }
        with open(os.path.join(staging, "local_lm_report.json"), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        retired = None
        if os.path.isdir(out_dir):  # moved aside first, so the old model goes only once the new one is in place
            retired = tempfile.mkdtemp(prefix=".local-lm-old-", dir=parent)
            os.replace(out_dir, os.path.join(retired, "model"))
        os.replace(staging, out_dir)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def catalogue_lines(config, title_field):
    """``training_lines`` of a RecBole config's dataset: the .item file read as the data hook reads it."""
    from recbole_tfllmer.text.encoders import config_value
    from recbole_tfllmer.text.hook import item_file_of, reader_options, text_fields_of
    from recbole_tfllmer.text.item_text import item_texts_from_file, read_header, read_item_table

    item_file, id_field, opts = item_file_of(config), config["ITEM_ID_FIELD"], reader_options(config)
    header = [name for name, _ in read_header(item_file, opts["field_separator"], opts["encoding"])]
    if title_field not in header:
        raise ValueError(
            f"title field {title_field!r} is not in item file '{item_file}' (fields: {', '.join(header)}); "
            "pass the one with the titles (--title-field, as `allmrec_title_field`)"
        )
    texts, _ = item_texts_from_file(
        item_file, id_field, text_fields_of(config), config_value(config, "text_template"), **opts
    )
    titles = read_item_table(item_file, id_field, [title_field], **opts)
    return training_lines(list(texts.values()), [(row or {}).get(title_field) for row in titles.values()])
