"""The Step 3.5 Flash model in PyTorch (S3F1 sliding-window/full attention with head-wise
gates, zero-centred RMSNorm, fine-grained MoE with a shared expert, MTP heads), its configs from
``tiny`` to the 196B ``full``, and the curriculum-driven trainer (``train``)."""
