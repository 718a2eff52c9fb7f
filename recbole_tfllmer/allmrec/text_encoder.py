"""A-LLMRec's text side fine-tuned in stage 1 (their code fine-tunes SBERT; B.3, B.7 #5): the
configured `text_encoder` loaded as a transformers AutoModel, mean-pooled, trained together
with the autoencoders. Texts are the data hook's (`text_fields` / `text_template`)."""

from torch import nn

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.text.encoders import config_value, ensure_pad_token, pool_hidden_states, resolve_model_path
from recbole_tfllmer.text.hook import dataset_item_tokens, item_file_of, reader_options, text_fields_of
from recbole_tfllmer.text.item_text import item_texts_from_file


class FineTunedTextEncoder(nn.Module):
    def __init__(self, model_path, texts, max_length=128, pooling="mean", allow_download=False):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=not allow_download)
        self.model = AutoModel.from_pretrained(model_path, local_files_only=not allow_download)
        if ensure_pad_token(self.tokenizer):
            self.model.resize_token_embeddings(len(self.tokenizer))
        self.texts = texts  # texts[i] for internal item id i
        self.max_length = max_length
        self.pooling = pooling

    @classmethod
    def from_config(cls, config, dataset):
        fields = text_fields_of(config)
        template = config_value(config, "text_template")
        texts, _ = item_texts_from_file(
            item_file_of(config), dataset.iid_field, fields, template, **reader_options(config)
        )
        tokens = dataset_item_tokens(dataset)
        missing = [t for t in tokens[1:] if not texts.get(t)]
        if missing:
            raise ConfigError(
                f"A-LLMRec fine-tunes its text encoder on item text, but {len(missing)} item(s) have none in "
                f"{item_file_of(config)} (e.g. {missing[:3]}); fix `text_fields`, or set "
                "`allmrec_finetune_text_encoder: false` (frozen vectors, `missing_text_policy` applies)"
            )
        path = resolve_model_path(
            config_value(config, "text_encoder"), bool(config_value(config, "text_allow_download"))
        )
        pooling = config_value(config, "text_pooling", "mean")
        return cls(path, [""] + [texts[t] for t in tokens[1:]], config_value(config, "text_max_length", 128), pooling)

    @property
    def dim(self):
        return int(self.model.config.hidden_size)

    def forward(self, ids):
        batch = self.tokenizer(
            [self.texts[int(i)] for i in ids],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.model(**batch)[0]
        return pool_hidden_states(hidden, batch["attention_mask"], self.pooling)
