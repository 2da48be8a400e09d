"""Zero-centred RMSNorm (PAPER §2.2, CODE ``rms_norm.py``).

The learnable weight starts at 0 and the effective scale is ``1 + w``.  With weight decay
pulling ``w`` toward 0 this decays the scale toward 1 rather than toward 0, which is why the
report uses it everywhere.  Statistics are computed in fp32 whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import nn


class ZeroCenteredRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (1.0 + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, zero_centred=True"
