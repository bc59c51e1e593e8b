"""Projections are feasible, idempotent and optimal (brute force on small tensors), masks match supports."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.compression import constraints as C

SHAPES = st.sampled_from([(3, 4), (2, 5), (4, 1), (2, 2, 2, 2), (3, 1, 2, 2), (2, 3, 1, 2)])


@st.composite
def weights(draw, shapes=SHAPES, ties: bool = True) -> torch.Tensor:
    shape = draw(shapes)
    n = 1
    for d in shape:
        n *= d
    # Small integers produce many exact ties, which the deterministic tie-break must handle.
    values = st.integers(-3, 3).map(float) if ties and draw(st.booleans()) else st.floats(-4, 4, width=32)
    return torch.tensor(draw(st.lists(values, min_size=n, max_size=n)), dtype=torch.float32).reshape(shape)


def _groups(weight: torch.Tensor, scheme: str) -> list[torch.Tensor]:
    """The units of ``scheme`` as boolean masks, enumerated independently of the implementation."""
    gemm_shape = (weight.shape[0], weight[0].numel())
    units = []
    if scheme == "irregular":
        for i in range(weight.numel()):
            m = torch.zeros(weight.numel(), dtype=torch.bool)
            m[i] = True
            units.append(m.reshape(weight.shape))
    elif scheme == "filter":
        for r in range(weight.shape[0]):
            m = torch.zeros_like(weight, dtype=torch.bool)
            m[r] = True
            units.append(m)
    elif scheme == "channel":
        for c in range(weight.shape[1]):
            m = torch.zeros_like(weight, dtype=torch.bool)
            m[:, c] = True
            units.append(m)
    else:
        for c in range(gemm_shape[1]):
            m = torch.zeros(gemm_shape, dtype=torch.bool)
            m[:, c] = True
            units.append(m.reshape(weight.shape))
    return units


@settings(max_examples=150, deadline=None)
@given(weight=weights(), scheme=st.sampled_from(C.PRUNING_SCHEMES), data=st.data())
def test_pruning_projection_is_feasible_idempotent_and_optimal(weight: torch.Tensor, scheme: str, data) -> None:
    units = _groups(weight, scheme)
    assert len(units) == C.group_count(weight, scheme)
    keep = data.draw(st.integers(0, len(units)))
    projected, mask = C.project_pruned(weight, scheme, keep)

    # feasible: the mask is exactly `keep` whole units, and the projection lives on it
    kept_units = [u for u in units if bool(mask[u].all())]
    assert len(kept_units) == keep
    assert torch.equal(mask, torch.stack(kept_units).any(0) if kept_units else torch.zeros_like(mask))
    assert torch.equal(projected, weight * mask)
    # idempotent
    again, again_mask = C.project_pruned(projected, scheme, keep)
    assert torch.equal(again, projected)
    # optimal: no other choice of `keep` units is closer (brute force over all of them)
    distance = float((weight - projected).pow(2).sum())
    if len(units) <= 10:
        for choice in itertools.combinations(units, keep):
            support = torch.stack(choice).any(0) if choice else torch.zeros_like(mask)
            assert distance <= float((weight - weight * support).pow(2).sum()) + 1e-5


def test_ties_keep_the_lower_index() -> None:
    projected, mask = C.project_pruned(torch.tensor([[1.0, -1.0, 1.0, 0.5]]), "irregular", 2)
    assert mask.tolist() == [[True, True, False, False]]
    _, rows = C.project_pruned(torch.ones(3, 2), "filter", 1)
    assert rows[:, 0].tolist() == [True, False, False]


def test_structured_masks_have_the_documented_shapes() -> None:
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) + 1
    _, filters = C.project_pruned(w, "filter", 1)
    assert filters[1].all() and not filters[0].any()  # the filter of larger norm survives
    _, channels = C.project_pruned(w, "channel", 1)
    assert channels[:, 2].all() and not channels[:, :2].any()
    _, columns = C.project_pruned(w, "column", 2)
    gemm = columns.reshape(2, 12)
    assert gemm[:, 10:].all() and not gemm[:, :10].any()
    fc = torch.tensor([[1.0, 5.0, 0.1], [1.0, 5.0, 0.1]])
    assert C.project_pruned(fc, "channel", 1)[1].tolist() == C.project_pruned(fc, "column", 1)[1].tolist()


LEVEL_BITS = st.sampled_from([1, 2, 3])


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=4),
    bits=LEVEL_BITS,
    alpha=st.floats(0.1, 2.0),
    pruned=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_quantized_projection_is_on_levels_idempotent_and_optimal(values, bits: int, alpha: float, pruned) -> None:
    weight = torch.tensor([values], dtype=torch.float32)
    for mask in (None, torch.tensor([[not p for p in pruned[: len(values)]]])):
        m = C.max_level(bits, allow_zero=mask is None)  # a pruned layer's survivors: +-1..+-2^(b-1)
        projected, support = C.project_quantized(weight, alpha, bits, mask)
        codes = projected / alpha
        assert torch.allclose(codes, codes.round(), atol=1e-5) and bool((codes.abs() <= m + 1e-5).all())
        assert torch.equal(support, projected != 0)
        if mask is not None:
            assert not projected[~mask].any()  # pruned stay exactly zero
            assert bool(projected[mask].ne(0).all())  # survivors never fall to zero
        if bits == 1:
            assert bool(codes.abs().sub(1).abs().lt(1e-5)[mask if mask is not None else codes == codes].all())
        again, _ = C.project_quantized(projected, alpha, bits, mask)
        assert torch.allclose(again, projected)
        # brute force: every assignment of allowed levels is at least as far
        allowed_free = [lvl for lvl in range(-m, m + 1) if not (lvl == 0 and (bits == 1 or mask is not None))]
        options = [allowed_free if mask is None or bool(mask[0, i]) else [0] for i in range(len(values))]
        distance = float((weight - projected).pow(2).sum())
        best = min(
            float((weight - alpha * torch.tensor([list(choice)], dtype=torch.float32)).pow(2).sum())
            for choice in itertools.product(*options)
        )
        assert distance <= best + 1e-4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: C.project_pruned(torch.ones(3), "irregular", 1), r"expected an FC \[out, in\] or conv"),
        (lambda: C.project_pruned(torch.ones(2, 2), "kernel", 1), r"unknown pruning scheme 'kernel'"),
        (lambda: C.project_pruned(torch.ones(2, 2), "filter", 3), r"keep=3 must be in \[0, 2\]"),
        (lambda: C.project_pruned(torch.tensor([[float("nan")]]), "irregular", 1), "NaN"),
        (lambda: C.keep_count(10, 0.0), r"kept fraction 0.0 must be in \(0, 1\]"),
        (lambda: C.keep_count(10, 1.5), r"kept fraction 1.5"),
        (lambda: C.project_quantized(torch.ones(2, 2), 1.0, 9), r"bit width 9 not allowed"),
        (lambda: C.project_quantized(torch.ones(2, 2), 0.0, 4), r"alpha=0.0 must be a positive"),
    ],
)
def test_bad_inputs_are_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
