"""Model storage: best format choice, index-width choice, the information bound and break-even ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.compression import constraints
from study.core import models
from study.costs import encoding, storage


@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_index_bound_is_log2_of_the_binomial(case: tuple[int, int]) -> None:
    n, k = case
    assert storage.index_bound_bits(n, k) == pytest.approx(math.log2(math.comb(n, k)), abs=1e-6)


def _random_sparse(shape: tuple[int, ...], density: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    return weight * (torch.rand(shape, generator=generator) < density)


@pytest.mark.parametrize("density", [0.01, 0.05, 0.2])
def test_no_format_beats_the_bound_on_random_masks(density: float) -> None:
    """A random mask is incompressible: every real format spends at least log2 C(n, k) bits on it."""
    weight = _random_sparse((200, 300), density)
    table = storage.format_comparison({"w": weight})
    assert (table["structure_bits"] >= table["ideal_index_bits"]).all()
    assert ((table["efficiency"] > 0) & (table["efficiency"] <= 1)).all()


def test_layer_storage_takes_the_cheapest_format_and_width() -> None:
    weight = _random_sparse((40, 90), 0.03, seed=1)
    chosen = storage.layer_storage(weight, "irregular", 32)
    candidates = [sum(encoding.count_bits(weight, f, 32, b).values())
                  for f in encoding.SPARSE_FORMATS + ("dense",) for b in encoding.INDEX_BITS]
    assert chosen["total_bits"] == min(candidates)
    assert chosen["total_bits"] == sum(chosen[c] for c in encoding.CATEGORIES)
    fixed = storage.layer_storage(weight, "irregular", 32, index_bits=1, formats=["rel_csc"])
    relative = storage.stored_layer(weight, "rel_csc", 32, 1)
    assert relative["total_bits"] < storage.stored_layer(weight, "dense", 32)["total_bits"]  # so the fixed format must win
    assert (fixed["format"], fixed["index_bits"], fixed["total_bits"]) == ("rel_csc", 1, relative["total_bits"])
    assert fixed["total_bits"] > chosen["total_bits"]  # 1-bit runs are not the cheapest width here


def test_a_dense_enough_layer_is_stored_dense() -> None:
    assert storage.layer_storage(torch.randn(20, 20), "irregular", 32)["format"] == "dense"


def test_a_pruned_layer_on_all_its_survivor_levels_has_no_dense_form() -> None:
    # 2-bit survivors on +-1, +-2 (all four codes) with 1 zero in 10: dense storage would need a fifth code
    # for the zeros, so the layer goes to a sparse format though it is dense enough to prefer dense otherwise
    levels = np.tile(np.array([-2, -1, 1, 2, 1, -1, 2, -2, 1, 0], dtype=np.float32), (30, 3))
    weight = 0.125 * levels
    with pytest.raises(encoding.EncodingError, match="5 distinct stored values do not fit 2-bit codes"):
        storage.stored_layer(weight, "dense", 2)
    chosen = storage.layer_storage(weight, "irregular", 2)
    assert chosen["format"] in encoding.SPARSE_FORMATS and chosen["values"] == 2 * int(np.count_nonzero(weight))
    assert chosen["scale"] == 32 and chosen["codebook"] == 0


def test_structured_models_are_stored_compacted() -> None:
    torch.manual_seed(0)
    model = models.build_model("lenet5")
    conv1 = models.prunable_layers(model)["conv1"]
    with torch.no_grad():
        conv1.weight.copy_(constraints.project_pruned(conv1.weight, "filter", 10)[0])
    table = storage.model_storage(model, "filter", 32, models.INPUT_SHAPES["lenet5"])
    rows = table.set_index("layer")
    assert rows.loc["conv1", "weights"] == 10 * 25 and rows.loc["conv2", "weights"] == 50 * 10 * 25
    assert (table["format"] == "structured").all()
    summary = storage.summarize(table, models.count_weights(model))
    assert summary["total_bits"] == table["total_bits"].sum()
    assert summary["pruning_rate"] == pytest.approx(models.count_weights(model) / table["nonzero"].sum())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.sampled_from([0.01, 0.1, 0.5]), st.sampled_from([1, 4, 8, 32]), st.integers(1, 8))
def test_measured_break_even_is_never_below_the_closed_form(seed: int, density: float, weight_bits: int, index_bits: int) -> None:
    """Real streams pay every closed-form index bit, plus fillers and pointers."""
    weights = {"a": _random_sparse((30, 50), density, seed), "b": _random_sparse((8, 3, 3, 3), density, seed + 1)}
    if not any(bool(w.count_nonzero()) for w in weights.values()):
        return
    measured = storage.break_even_measured(weights, weight_bits, index_bits)
    assert measured >= storage.break_even_closed_form(weight_bits, index_bits) - 1e-12


def test_break_even_grid_and_ideal_comparison() -> None:
    weights = {"w": _random_sparse((50, 80), 0.02)}
    grid = storage.break_even_grid(weights, [1, 8], [2, 4])
    assert len(grid) == 4 and grid.loc[0, "closed_form"] == 3.0
    nonzero = int(weights["w"].count_nonzero())
    comparison = storage.ideal_comparison(weights, structured_nonzero=3 * nonzero, weight_bits=[1, 32])
    bound = storage.index_bound_bits(4000, nonzero)
    assert comparison.loc[0, "irregular_ideal_bits"] == pytest.approx(nonzero + bound)
    assert comparison.loc[1, "structured_wins"] == bool(3 * nonzero * 32 < nonzero * 32 + bound)


def test_bad_scheme_and_format_are_named() -> None:
    with pytest.raises(ValueError, match="scheme='kernel'"):
        storage.layer_storage(torch.zeros(2, 2), "kernel", 32)
    with pytest.raises(ValueError, match=r"\['coo'\]"):
        storage.layer_storage(torch.zeros(2, 2), "irregular", 32, formats=["coo"])
    with pytest.raises(ValueError, match="no non-zero"):
        storage.break_even_measured({"w": torch.zeros(3, 3)}, 8, 4)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 70), density=st.sampled_from([0.0, 0.02, 0.2, 0.7, 1.0]),
       seed=st.integers(0, 2**16), fmt=st.sampled_from(encoding.RELATIVE_FORMATS), conv=st.booleans())
def test_structure_bits_at_every_width_from_the_runs_equal_the_encoders(rows, cols, density, seed, fmt, conv) -> None:
    """The one-pass count that picks the run-length width is what the encoder writes, at every width."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) < density)
    if conv and cols % 2 == 0:
        weight = weight.reshape(rows, 2, cols // 2, 1)
    fast = storage.relative_structure_bits(weight, fmt)
    assert fast == {b: sum(storage.structure_bits(weight, fmt, b).values()) for b in encoding.INDEX_BITS}
    slow = {b: sum(storage.structure_bits(weight, fmt, b).values()) for b in encoding.INDEX_BITS}
    assert storage.best_index_bits(weight, fmt) == min(slow, key=lambda b: (slow[b], b))
