"""LLMEmb (Liu et al., AAAI 2025, arXiv 2409.19925) as a method of the plugin: supervised
contrastive fine-tuning of the text encoder on attribute prompts (SCFT), then a frozen,
PCA-reduced table behind a trainable adapter aligned with a collaborative item table (RAT)."""
