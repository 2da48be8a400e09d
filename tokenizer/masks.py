"""Per-token flag bits stored next to every token (``*.mask.bin`` and the mix's ``mask.bin``).

One uint8 per token so that the loss policy can change at training time (e.g. the report
masks the meta string only after ~3.8T tokens) without re-tokenizing anything.
"""

LOSS = 1  # the token is a loss target according to the document's spans
META = 2  # the token belongs to the meta string prepended to the document
PAD = 4   # padding inserted by packing; never a target
