"""Constraint sets of ADMM-NN-S and their exact Euclidean projections, as pure functions on tensors.

A conv weight [out, in, kh, kw] is viewed as its GEMM matrix [out, in*kh*kw]; an FC weight [out, in]
is already one. The sets (``keep`` is how many units survive):

- irregular: at most ``keep`` non-zero weights -> keep the largest magnitudes;
- filter:    at most ``keep`` non-zero rows (filters / output neurons) -> keep the largest row norms;
- channel:   at most ``keep`` non-zero input channels ``W[:, c]`` -> keep the largest channel norms;
- column:    at most ``keep`` non-zero GEMM columns ``(c, kh, kw)`` -> keep the largest column norms;
- quantized: every value on ``alpha * {-(2^(b-1)-1), ..., 2^(b-1)-1}`` (b = 2 is ternary ``alpha * {-1, 0, +1}``),
  or, for a pruned layer's survivors, on ``alpha * {+-1, ..., +-2^(b-1)}`` (b = 1: binary ``alpha * {-1, +1}``)
  -> round each value to its nearest level.

Keeping the ``keep`` groups of largest L2 norm is the exact projection because the distance to a
point that zeroes a set of groups is the sum of those groups' squared norms. Ties are broken
deterministically: among equal norms, the lower index survives. Each projection returns the
projected tensor and its 0/1 mask (the support the set allows).
"""

from __future__ import annotations

import math

import torch

from study.contract import FULL_PRECISION_BITS, PRUNING_SCHEMES, QUANTIZED_BITS
from study.contract import max_level as contract_max_level

# Widths a projection onto levels accepts; 32 = full precision (no quantization).
WEIGHT_BITS = (*QUANTIZED_BITS, FULL_PRECISION_BITS)


def _check_weight(weight: torch.Tensor) -> None:
    if weight.dim() not in (2, 4):
        raise ValueError(f"expected an FC [out, in] or conv [out, in, kh, kw] weight, got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight has NaN or infinite values")


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """The GEMM matrix [out, in*kh*kw] of a conv weight (a view); FC weights unchanged."""
    _check_weight(weight)
    return weight.reshape(weight.shape[0], -1)


def group_count(weight: torch.Tensor, scheme: str) -> int:
    """How many units ``scheme`` prunes in this weight (weights, filters, channels or columns)."""
    _check_weight(weight)
    return {
        "irregular": weight.numel(),
        "filter": weight.shape[0],
        "channel": weight.shape[1],
        "column": gemm_view(weight).shape[1],
    }[_check_scheme(scheme)]


def _check_scheme(scheme: str) -> str:
    if scheme not in PRUNING_SCHEMES:
        raise ValueError(f"unknown pruning scheme {scheme!r}; valid schemes: {list(PRUNING_SCHEMES)}")
    return scheme


def keep_count(n_units: int, keep_fraction: float) -> int:
    """Units kept for a kept fraction in (0, 1]: rounded, at least one."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"kept fraction {keep_fraction} must be in (0, 1]")
    return max(1, min(n_units, round(keep_fraction * n_units)))


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` largest scores; among equal scores the lower index wins."""
    # A stable descending sort gives the deterministic tie-break that torch.topk does not promise.
    return torch.sort(scores, descending=True, stable=True).indices[:keep]


def _keep_groups(weight: torch.Tensor, scheme: str, keep: int) -> torch.Tensor:
    """The 0/1 mask (shape of ``weight``) of the ``keep`` groups of largest L2 norm."""
    n_units = group_count(weight, scheme)
    if not 0 <= keep <= n_units:
        raise ValueError(f"keep={keep} must be in [0, {n_units}] for {scheme} pruning of shape {tuple(weight.shape)}")
    w = weight.detach()
    if scheme == "irregular":
        flat = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        flat[top_indices(w.abs().flatten(), keep)] = True
        return flat.reshape(w.shape)
    gemm = gemm_view(w)
    if scheme == "filter":
        rows = torch.zeros(gemm.shape[0], dtype=torch.bool, device=w.device)
        rows[top_indices(gemm.pow(2).sum(dim=1), keep)] = True
        return rows.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
    if scheme == "channel":
        norms = w.pow(2).sum(dim=[d for d in range(w.dim()) if d != 1])
        channels = torch.zeros(w.shape[1], dtype=torch.bool, device=w.device)
        channels[top_indices(norms, keep)] = True
        return channels.reshape(1, -1, *([1] * (w.dim() - 2))).expand_as(w).clone()
    columns = torch.zeros(gemm.shape[1], dtype=torch.bool, device=w.device)
    columns[top_indices(gemm.pow(2).sum(dim=0), keep)] = True
    return columns.reshape(1, -1).expand_as(gemm).reshape(w.shape).clone()


def project_pruned(weight: torch.Tensor, scheme: str, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean projection onto the ``scheme`` set with ``keep`` surviving units: (projection, mask)."""
    mask = _keep_groups(weight, _check_scheme(scheme), keep)
    return weight * mask, mask


# ---------------------------------------------------------------------------------------------
# Quantization levels
# ---------------------------------------------------------------------------------------------


def check_bits(bits: int) -> int:
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bit width {bits} not allowed; valid: {list(WEIGHT_BITS)} (1 = binary, 32 = float)")
    return bits


def max_level(bits: int, allow_zero: bool = True) -> int:
    """Largest integer level of the b-bit grid (``study.contract.max_level``), for a valid bit width."""
    return contract_max_level(check_bits(bits), allow_zero)


def quantize_codes(weight: torch.Tensor, alpha: float, bits: int, allow_zero: bool = True) -> torch.Tensor:
    """Integer level of each value: nearest in {-m..m}, or in +-1..+-2^(b-1) for binary or when
    ``allow_zero`` is False (see ``max_level``).

    Ties (a value exactly half way between two levels) go to the level of larger magnitude, and an
    exact 0 that may not stay 0 goes to +1: deterministic, and both are still nearest levels.
    """
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha={alpha} must be a positive finite scale")
    m = max_level(bits, allow_zero)
    scaled = weight.detach() / alpha
    # round half away from zero (torch.round rounds half to even)
    codes = torch.clamp(torch.sign(scaled) * torch.floor(scaled.abs() + 0.5), -m, m)
    if bits == 1 or not allow_zero:
        codes = torch.where(codes == 0, torch.where(scaled < 0, -1.0, 1.0).to(codes.dtype), codes)
    return codes


def project_quantized(
    weight: torch.Tensor, alpha: float, bits: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection onto the b-bit levels with scale ``alpha``: (projection, mask of non-zeros).

    With a pruning ``mask``, pruned weights stay exactly zero and survivors go to their nearest
    *non-zero* level (a survivor may not silently become pruned); without one, 0 is a level for b >= 2.
    """
    _check_weight(weight)
    if bits == 32:
        projected = weight.detach().clone() if mask is None else weight.detach() * mask
    else:
        codes = quantize_codes(weight, alpha, bits, allow_zero=mask is None)
        projected = alpha * codes if mask is None else alpha * codes * mask
    return projected, projected != 0
