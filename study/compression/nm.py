"""Semi-structured N:M sparsity: at most N non-zeros in every group of M consecutive weights of the reduction.

The groups run along each output row of the GEMM matrix in the order sparse hardware reads it: for a conv weight
[out, in, kh, kw], input channels innermost at each kernel position (NHWC, the layout NVIDIA's sparse tensor cores
and TensorRT prune 2:4 in), i.e. the row ``W[o].permute(kh, kw, in)``; an FC row as it is. A layer whose reduction
length (in * kh * kw, or in) is not a multiple of M cannot be cut into groups: it is left dense, and says so
(``applies``). Keeping the N largest magnitudes of each group is the exact Euclidean projection: the groups are
independent, and within one the distance is the sum of the squares dropped. Ties: the lower position survives.
"""

from __future__ import annotations

import math

import torch

from study.contract import NM_CONV_ORDER, nm_pattern

def bound_bits(n: int, m: int) -> float:
    """log2 C(M, N): the fewest bits any code can spend per group to say which N of its M positions are kept."""
    return math.log2(math.comb(m, n))


def reduction_view(weight: torch.Tensor) -> torch.Tensor:
    """[out, reduction] in hardware order (a copy for a conv weight; an FC weight as it is)."""
    return weight.permute(*NM_CONV_ORDER).reshape(weight.shape[0], -1) if weight.dim() == 4 else weight


def from_reduction_view(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`reduction_view` for a weight of ``shape``."""
    if len(shape) == 4:
        out, channels, kh, kw = shape
        return rows.reshape(out, kh, kw, channels).permute(0, 3, 1, 2).contiguous()
    return rows.reshape(shape)


def applies(weight: torch.Tensor, m: int) -> bool:
    """Whether the layer can be cut into groups of ``m`` (its reduction length is a multiple of ``m``)."""
    return reduction_view(weight).shape[1] % m == 0


def project(weight: torch.Tensor, pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The Euclidean projection onto "at most N non-zeros in each group of M": (projection, 0/1 mask)."""
    n, m = nm_pattern(pattern)
    if weight.dim() not in (2, 4):
        raise ValueError(f"expected an FC [out, in] or conv [out, in, kh, kw] weight, got shape {tuple(weight.shape)}")
    if not applies(weight, m):
        raise ValueError(f"{pattern} sparsity of shape {tuple(weight.shape)}: its reduction length "
                         f"{reduction_view(weight).shape[1]} is not a multiple of {m}; leave the layer dense")
    groups = reduction_view(weight.detach()).reshape(-1, m)
    # a stable descending sort: among equal magnitudes the lower position is kept
    order = torch.sort(groups.abs(), dim=1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order, True)
    mask = from_reduction_view(keep.reshape(weight.shape[0], -1), tuple(weight.shape))
    return weight * mask, mask
