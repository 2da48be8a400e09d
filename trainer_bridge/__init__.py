"""Trainer bridge: deterministic, resumable, data-parallel loaders from the packed sequences
that ``build-mix`` writes to training batches (tokens, labels, loss mask, document ids and
positions), switching seq_len and batch size at phase boundaries."""
