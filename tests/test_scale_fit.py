"""The quantization scale is the exact least-squares optimum: checked against brute force and a fine grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.compression import constraints as C
from study.compression import scale_fit as S


def _error(a: np.ndarray, alpha: float, bits: int, allow_zero: bool) -> float:
    return S.quantization_error(a, alpha, bits, allow_zero)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.floats(0, 4, width=32), min_size=1, max_size=4),
       bits=st.sampled_from([2, 3]), allow_zero=st.booleans())
def test_the_scale_equals_brute_force_over_every_code_assignment(values: list[float], bits: int, allow_zero: bool) -> None:
    # min over alpha of ||a - alpha Q(a/alpha)|| = min over every code vector q of min over alpha ||a - alpha q||,
    # and the inner minimum is at <a,q>/<q,q>: enumerating q is a brute force of the whole problem
    a = np.array(values, dtype=np.float64)
    if not a.any():
        return
    m = C.max_level(bits, allow_zero)
    levels = range(0 if allow_zero else 1, m + 1)
    best = min(float(((a - (a @ q) / (q @ q) * q) ** 2).sum()) if q.any() else float((a * a).sum())
               for q in map(np.array, itertools.product(levels, repeat=len(a))))
    alpha = S.exact_alpha(a, bits, allow_zero)
    assert _error(a, alpha, bits, allow_zero) <= best + 1e-9 * max(1.0, float((a * a).sum()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(1, 3000), bits=st.sampled_from([2, 3, 4, 8]),
       laplace=st.booleans(), masked=st.booleans())
def test_the_scale_is_never_worse_than_a_1000_point_grid(seed: int, size: int, bits: int, laplace: bool, masked: bool) -> None:
    rng = np.random.default_rng(seed)
    weight = torch.tensor(rng.laplace(size=(1, size)) if laplace else rng.normal(size=(1, size)), dtype=torch.float32)
    mask = torch.ones(1, size, dtype=torch.bool) if masked else None
    alpha = S.fit_alpha(weight, bits, mask)
    a = weight.abs().double().numpy()
    grid = np.linspace(a.max() / 1000, 2 * a.max(), 1000)
    best_on_grid = min(_error(a, g, bits, not masked) for g in grid)
    assert _error(a, alpha, bits, not masked) <= best_on_grid * (1 + 1e-9)
    # and it agrees with the projection the ADMM steps use (torch, float32)
    projected, _ = C.project_quantized(weight, alpha, bits, mask)
    assert float((weight.double() - projected.double()).pow(2).sum()) == pytest.approx(_error(a, alpha, bits, not masked), rel=1e-4)


@pytest.mark.parametrize("bits", [3, 8])
def test_slicing_the_alpha_axis_changes_nothing(bits: int) -> None:
    a = np.abs(np.random.default_rng(1).laplace(size=700))
    a[:50] = np.round(a[:50], 1)  # equal values: ties among thresholds across slice borders
    whole = S.exact_alpha(a, bits, True)
    sliced = S.exact_alpha(a, bits, True, chunk=37)
    assert _error(a, sliced, bits, True) == pytest.approx(_error(a, whole, bits, True), rel=1e-12)


def test_a_tie_larger_than_a_slice_is_taken_whole() -> None:
    a = np.concatenate([np.full(200, 0.5), np.linspace(0.01, 2, 50)])  # 200 equal values: 200 equal thresholds per level
    assert S.exact_alpha(a, 4, True, chunk=10) == pytest.approx(S.exact_alpha(a, 4, True), rel=1e-12)


def test_the_exact_scale_beats_the_alternation_it_replaced() -> None:
    # Lloyd alternation from 'largest on the top level' stops in a local optimum at 8 bits on Gaussian weights
    a = np.abs(np.random.default_rng(0).normal(size=20000))
    alpha = a.max() / C.max_level(8)
    for _ in range(30):
        q = np.clip(np.floor(a / alpha + 0.5), 0, C.max_level(8))
        alpha = float(a @ q / (q @ q))
    assert _error(a, S.exact_alpha(a, 8, True), 8, True) < 0.97 * _error(a, alpha, 8, True)


def test_binary_and_degenerate_layers() -> None:
    w = torch.tensor([[0.5, -1.5, 2.0, -0.2]])
    assert S.fit_alpha(w, 1) == pytest.approx(float(w.abs().mean()))
    projected, _ = C.project_quantized(w, S.fit_alpha(w, 1), 1)
    assert torch.allclose(projected, torch.sign(w) * w.abs().mean())
    assert S.fit_alpha(torch.zeros(5), 4) == 1.0  # nothing to fit: any positive scale projects to 0
    assert S.fit_alpha(torch.ones(3), 4, torch.zeros(3, dtype=torch.bool)) == 1.0
    # survivors that are exactly 0 must take level 1 under a mask: the scale accounts for them
    w = torch.tensor([0.0, 1.0, 1.0, 1.0])
    alpha = S.fit_alpha(w, 2, torch.ones(4, dtype=torch.bool))
    # 2-bit survivor levels are +-1, +-2: codes (1, 2, 2, 2) give <a,q>/<q,q> = 6/13 (error 0.23), better
    # than codes all 1 at 0.75 (error 0.75)
    assert alpha == pytest.approx(6 / 13)
    assert _error(w.numpy().astype(np.float64), alpha, 2, False) == pytest.approx(3 / 13)
    with pytest.raises(ValueError, match="bit width 33"):
        S.fit_alpha(w, 33)
