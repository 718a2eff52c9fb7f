"""A-LLMRec (Kim et al., KDD 2024, arXiv 2404.11343) as a method of the plugin: a frozen
collaborative model, a collaborative-text alignment (stage 1), and a frozen causal LM that
ranks a candidate list from soft prompt tokens (stage 2)."""
