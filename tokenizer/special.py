"""Special tokens reserved in every tokenizer we train.

Role and span markers are *control* pieces: sentencepiece never produces them from raw text,
so a web page that literally contains ``<|user|>`` cannot forge a role boundary. Documents that
are structured (chat/tool-use/PR-Dialogue/reasoning, i.e. that carry ``spans``) are split on the
marker strings and the marker ids are inserted by id (see ``tokenizer.encode``).
"""

from __future__ import annotations

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

META_OPEN, META_CLOSE = "<|meta|>", "<|/meta|>"

ROLE_MARKERS = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool_call|>",
    "<|tool_result|>",
    "<|end|>",
    "<|think|>",
    "<|/think|>",
)

# Spare ids so that later special tokens do not change the ids of ordinary pieces.
RESERVED = tuple(f"<|reserved_{i}|>" for i in range(16))

CONTROL_SYMBOLS: tuple[str, ...] = (META_OPEN, META_CLOSE, *ROLE_MARKERS, *RESERVED)

# Markers that split structured documents (longest first so that no marker shadows another).
SPLIT_MARKERS: tuple[str, ...] = tuple(sorted((META_OPEN, META_CLOSE, *ROLE_MARKERS), key=len, reverse=True))
