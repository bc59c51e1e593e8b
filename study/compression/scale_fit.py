"""The exact least-squares scale of a uniformly quantized layer: argmin over alpha of ||W - alpha * Q(W / alpha)||.

Why not alternate (Lloyd: codes for a scale, then the closed-form scale for the codes)? It stops in local
optima: on 20,000 Gaussian weights at 8 bits its error was 5-11% above a plain grid search. The error is a
piecewise quadratic in alpha instead, and it can be minimised exactly:

- With ``a = |w|``, a value's code magnitude is ``k(alpha) = clamp(floor(a / alpha + 1/2), k_min, m)``
  (``k_min`` = 1 when 0 is not a level). It steps from k-1 to k where alpha falls below ``a / (k - 1/2)``.
- Between two consecutive such thresholds the codes are fixed, and the error
  ``sum a^2 - 2 alpha <a,k> + alpha^2 <k,k>`` is a parabola with its minimum at ``<a,k> / <k,k>``.
- Sweeping the thresholds from the largest down, each crossing adds ``a`` to <a,k> and ``2k - 1`` to <k,k>,
  so cumulative sums give every piece's parabola; the best clamped minimum over all pieces is the optimum.

The sweep has (levels x values) thresholds, 50 million for LeNet-5's dense fc1 at 8 bits; it runs over slices
of the alpha axis holding at most ``chunk`` thresholds each, so memory stays bounded for any layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from study.compression.constraints import check_bits, max_level

CHUNK = 2_000_000  # thresholds sorted at once (~50 MB of float64 work arrays)


def quantization_error(magnitudes: np.ndarray, alpha: float, bits: int, allow_zero: bool) -> float:
    """sum (a - alpha k)^2 with k the nearest allowed level of a / alpha (half-way values round up)."""
    k_min = 0 if allow_zero and bits > 1 else 1
    codes = np.clip(np.floor(magnitudes / alpha + 0.5), k_min, max_level(bits, allow_zero))
    return float(((magnitudes - alpha * codes) ** 2).sum())


def _crossed(sorted_a: np.ndarray, prefix: np.ndarray, alpha: float, levels: np.ndarray) -> tuple[float, float]:
    """(sum of a, sum of 2k - 1) over the thresholds a / (k - 1/2) >= alpha: what codes above k_min add."""
    starts = np.searchsorted(sorted_a, alpha * (levels - 0.5), side="left")  # a >= alpha (k - 1/2)
    counts = len(sorted_a) - starts
    return float((prefix[-1] - prefix[starts]).sum()), float((counts * (2 * levels - 1)).sum())


def _threshold_count(sorted_a: np.ndarray, alpha: float, levels: np.ndarray) -> int:
    return int((len(sorted_a) - np.searchsorted(sorted_a, alpha * (levels - 0.5), side="left")).sum())


def _slice_bounds(positive: np.ndarray, levels: np.ndarray, top: float, chunk: int) -> list[float]:
    """Alpha values top = b0 > b1 > ... > 0 with about ``chunk`` thresholds in each [b_{j+1}, b_j)."""
    total = len(levels) * len(positive)
    bottom = float(positive[0]) / (float(levels[-1]) - 0.5)  # the smallest threshold: count(bottom) = total
    bounds = [top]
    while (done := _threshold_count(positive, bounds[-1], levels)) + chunk < total:
        target = done + chunk
        lo, hi, count_hi = bottom, bounds[-1], done  # bisection on log alpha: the count falls as alpha grows
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            count_mid = _threshold_count(positive, mid, levels)
            if count_mid > target:
                lo = mid
            else:
                hi, count_hi = mid, count_mid
        # count(hi) <= target < count(lo); a tie of more than a chunk leaves count(hi) where it was: take it whole
        bounds.append(hi if count_hi > done else lo)
    bounds.append(0.0)
    return bounds


def exact_alpha(magnitudes: np.ndarray, bits: int, allow_zero: bool, chunk: int = CHUNK) -> float:
    """The scale of least squared error over all alpha > 0 (see the module docstring)."""
    m = max_level(bits, allow_zero)
    k_min = 0 if allow_zero and bits > 1 else 1
    a = np.sort(np.abs(np.asarray(magnitudes, dtype=np.float64)).ravel())
    if a.size == 0 or not a.any():
        return 1.0
    if k_min == m:  # binary: a single code, so the closed form <a,1>/<1,1>
        return float(a.mean())
    positive = a[a > 0]  # a zero never changes code
    levels = np.arange(k_min + 1, m + 1, dtype=np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(positive)])
    total_sq = float((a * a).sum())
    base_wq, base_qq = k_min * float(a.sum()), k_min * k_min * float(a.size)  # every value at k_min
    best_alpha, best_error = float(positive[-1]) / m, math.inf
    if k_min:  # above every threshold all codes are 1: that parabola's minimum is at the mean magnitude
        best_alpha = float(a.mean())
        best_error = quantization_error(a, best_alpha, bits, allow_zero)
    top = float(positive[-1]) / (k_min + 0.5) * (1 + 1e-12)
    bounds = _slice_bounds(positive, levels, top, chunk)
    for upper, lower in zip(bounds[:-1], bounds[1:]):
        wq, qq = _crossed(positive, prefix, upper, levels)
        # thresholds in [lower, upper): per level k, the values with lower (k - 1/2) <= a < upper (k - 1/2)
        lo_idx = np.searchsorted(positive, lower * (levels - 0.5), side="left")
        hi_idx = np.searchsorted(positive, upper * (levels - 0.5), side="left")
        parts = [(positive[i:j], k) for i, j, k in zip(lo_idx, hi_idx, levels) if j > i]
        if parts:
            values = np.concatenate([p for p, _ in parts])
            thresholds = np.concatenate([p / (k - 0.5) for p, k in parts])
            steps = np.concatenate([np.full(len(p), 2 * k - 1) for p, k in parts])
            order = np.argsort(-thresholds, kind="stable")
            thresholds, values, steps = thresholds[order], values[order], steps[order]
        else:
            thresholds = values = steps = np.empty(0)
        # piece j: the codes once the first j thresholds are crossed, for alpha in [t_{j+1}, t_j]
        sum_wq = base_wq + wq + np.concatenate([[0.0], np.cumsum(values)])
        sum_qq = base_qq + qq + np.concatenate([[0.0], np.cumsum(steps)])
        piece_hi = np.concatenate([[upper], thresholds])
        piece_lo = np.concatenate([thresholds, [lower]])
        usable = sum_qq > 0  # sum_qq = 0: every code 0, the all-zero layer (never the optimum)
        stationary = np.where(usable, sum_wq / np.where(usable, sum_qq, 1.0), 0.0)
        alpha = np.clip(stationary, piece_lo, piece_hi)
        errors = np.where(usable & (alpha > 0), total_sq - 2 * alpha * sum_wq + alpha * alpha * sum_qq, np.inf)
        j = int(np.argmin(errors))
        if errors[j] < best_error:
            best_alpha, best_error = float(alpha[j]), float(errors[j])
    return best_alpha


def fit_alpha(weight: torch.Tensor, bits: int, mask: torch.Tensor | None = None) -> float:
    """Per-layer scale of the b-bit levels (``constraints.max_level``): the exact least-squares optimum.

    Only the survivors (``mask``) count, and with a mask 0 is not a level (a survivor stays non-zero):
    their levels are +-1..+-2^(b-1).
    32-bit layers keep their floats; the mean magnitude is returned for them (unused).
    """
    check_bits(bits)
    w = weight.detach().flatten() if mask is None else weight.detach()[mask.bool()]
    if w.numel() == 0 or not bool((w != 0).any()):
        return 1.0
    magnitudes = w.abs().double().cpu().numpy()
    if bits == 32:
        return float(magnitudes.mean())
    return exact_alpha(magnitudes, bits, allow_zero=mask is None)
