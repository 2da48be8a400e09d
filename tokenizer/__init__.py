"""Tokenizer: sentencepiece BPE training with our reserved special, role and meta-string
tokens; parallel encoding of Document corpora into Megatron-compatible indexed datasets
(``.bin``/``.idx``) with parallel token-level loss masks and a manifest of exact counts and
checksums."""
