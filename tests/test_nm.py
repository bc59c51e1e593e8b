"""N:M sparsity: the projection is feasible, idempotent and optimal against brute force, in hardware (NHWC) order;
both N:M stream formats round-trip bit for bit and count every bit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.compression import nm
from study.contract import nm_pattern
from study.costs import encoding, storage


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    return nm.reduction_view(weight).reshape(-1, m)


@st.composite
def small_weights(draw) -> tuple[torch.Tensor, str]:
    pattern = draw(st.sampled_from(["1:2", "2:4", "1:4", "3:4"]))
    _, m = nm_pattern(pattern)
    if draw(st.booleans()):  # conv: input channels a multiple of m, so groups never straddle kernel positions
        shape = (draw(st.integers(1, 2)), m * draw(st.integers(1, 2)), draw(st.integers(1, 2)), 1)
    else:
        shape = (draw(st.integers(1, 2)), m * draw(st.integers(1, 2)))
    values = draw(st.lists(st.sampled_from([0.0, 0.5, -0.5, 1.0, -2.0, 3.0, 0.25]), min_size=math.prod(shape),
                           max_size=math.prod(shape)))
    return torch.tensor(values, dtype=torch.float32).reshape(shape), pattern


@settings(max_examples=150, deadline=None)
@given(case=small_weights())
def test_the_projection_is_feasible_idempotent_and_optimal(case) -> None:
    weight, pattern = case
    n, m = nm_pattern(pattern)
    projected, mask = nm.project(weight, pattern)
    assert torch.equal(projected, weight * mask)
    assert bool((_groups(mask, m).sum(dim=1) <= n).all()), "more than N kept in a group"
    again, _ = nm.project(projected, pattern)
    assert torch.equal(again, projected)
    # optimal: per group (groups are independent), brute force over every choice of at most N positions
    for w, p in zip(_groups(weight, m), _groups(projected, m)):
        candidates = [float(w[list(set(range(m)) - set(kept))].pow(2).sum())
                      for size in range(n + 1) for kept in itertools.combinations(range(m), size)]
        assert float((w - p).pow(2).sum()) == pytest.approx(min(candidates), abs=1e-6)


def test_groups_run_along_input_channels_at_each_kernel_position() -> None:
    weight = torch.zeros(1, 4, 1, 2)
    weight[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # kernel position 0: channels 0..3
    weight[0, :, 0, 1] = torch.tensor([8.0, 7.0, 6.0, 5.0])  # kernel position 1
    projected, _ = nm.project(weight, "2:4")
    assert projected[0, :, 0, 0].tolist() == [0, 0, 3, 4] and projected[0, :, 0, 1].tolist() == [8, 7, 0, 0]


def test_ties_keep_the_lower_position_and_short_reductions_are_refused() -> None:
    projected, _ = nm.project(torch.ones(1, 4), "2:4")
    assert projected.tolist() == [[1, 1, 0, 0]]
    with pytest.raises(ValueError, match="reduction length 9 is not a multiple of 4; leave the layer dense"):
        nm.project(torch.ones(16, 1, 3, 3), "2:4")  # VGG-6's conv1: one input channel
    with pytest.raises(ValueError, match="write it as N:M"):
        nm_pattern("2-4")
    assert not nm.applies(torch.ones(16, 1, 3, 3), 4) and nm.applies(torch.ones(16, 16, 3, 3), 4)


def _nm_layer(shape: tuple[int, ...], pattern: str, bits: int, seed: int = 0, fewer: float = 0.0) -> np.ndarray:
    """A layer projected onto ``pattern`` and put on a b-bit grid (survivors non-zero); ``fewer``: the share of
    kept weights zeroed again, so that some groups hold fewer than N."""
    torch.manual_seed(seed)
    weight, mask = nm.project(torch.randn(shape), pattern)
    if bits < 32:
        top = 2 ** (bits - 1)
        levels = torch.clamp(torch.round(weight / weight.abs().max() * top), -top, top)
        weight = torch.where(mask.bool() & (levels == 0), torch.sign(weight), levels) * 0.125
    weight = weight * (torch.rand(shape) >= fewer)
    return weight.numpy()


@pytest.mark.parametrize("fmt", encoding.NM_FORMATS)
@pytest.mark.parametrize("pattern", ["2:4", "1:4", "2:8", "1:8"])
@pytest.mark.parametrize("bits", [32, 8, 4, 1])
@pytest.mark.parametrize("shape", [(8, 16, 3, 3), (6, 32)])
def test_nm_formats_round_trip_and_count_every_bit(fmt, pattern, bits, shape) -> None:
    n, m = nm_pattern(pattern)
    weight = _nm_layer(shape, pattern, bits)
    encoded = encoding.encode(weight, fmt, bits, scheme=pattern)
    assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)
    assert encoded.n_bits == sum(encoded.breakdown.values()) == 8 * len(encoded.data) - (-encoded.n_bits % 8)
    groups = weight.size // m
    position_bits = groups * n * math.ceil(math.log2(m)) if fmt == "nm_hw" else groups * math.ceil(math.log2(math.comb(m, n)))
    assert encoded.breakdown["indices"] == position_bits and encoded.breakdown["pointers"] == 0
    assert encoded.breakdown["values"] == groups * n * bits  # exactly N values a group, as the hardware stores them
    row = storage.stored_layer(weight, fmt, bits, scheme=pattern)
    assert row["total_bits"] == encoded.n_bits and row["ideal_index_bits"] == pytest.approx(groups * math.log2(math.comb(m, n)))
    assert row["ideal_index_bits"] <= position_bits


@pytest.mark.parametrize("fmt", encoding.NM_FORMATS)
def test_adversarial_groups_round_trip(fmt) -> None:
    full = np.tile(np.array([[0, 3.0, 0, -1.0]], dtype=np.float32), (4, 8))  # every group exactly N = 2
    empty = np.zeros((4, 32), dtype=np.float32)  # every group empty: N zero slots stored each
    fewer = full * (np.arange(32) % 8 < 4)  # half the groups empty, half full
    single = np.zeros((1, 4), dtype=np.float32)
    single[0, 3] = 2.0  # one non-zero: its slot and the lowest free one
    for weight in (full, empty, fewer, single):
        encoded = encoding.encode(weight, fmt, 32, scheme="2:4")
        assert np.array_equal(encoding.decode(encoded.data, encoded.n_bits), weight)
    with pytest.raises(encoding.EncodingError, match="reduction length 9 is not a multiple of 4; store the layer dense"):
        encoding.encode(np.ones((4, 1, 3, 3), np.float32), fmt, 32, scheme="2:4")
    with pytest.raises(encoding.EncodingError, match="holds more than 2 non-zeros: project the layer onto 2:4 first"):
        encoding.encode(np.ones((2, 8), np.float32), fmt, 32, scheme="2:4")


def test_corrupt_nm_streams_are_refused() -> None:
    weight = _nm_layer((2, 8), "2:4", 32, fewer=0.0)
    hw = encoding.encode(weight, "nm_hw", 32, scheme="2:4")
    bits = np.unpackbits(np.frombuffer(hw.data, np.uint8))
    start = hw.breakdown["header"]  # the first group's two 2-bit positions follow the header
    swapped = bits.copy()
    swapped[start:start + 4] = [1, 1, 0, 0]  # positions 3 then 0: out of order
    with pytest.raises(encoding.EncodingError, match="out of order"):
        encoding.decode(np.packbits(swapped).tobytes(), hw.n_bits)
    low = encoding.encode(weight, "nm_min", 32, scheme="2:4")
    bits = np.unpackbits(np.frombuffer(low.data, np.uint8))
    start = low.breakdown["header"]
    bits[start:start + 3] = [1, 1, 1]  # rank 7 of the 6 kept sets
    with pytest.raises(encoding.EncodingError, match="rank past the C\\(4, 2\\)"):
        encoding.decode(np.packbits(bits).tobytes(), low.n_bits)


def test_the_asp_baseline_keeps_exactly_n_of_m_in_every_group_through_retraining(synthetic_root) -> None:
    from study.compression import asp, magnitude
    from study.core import data, models, training
    from study.core.training import TrainConfig

    splits = data.load_dataset("fashion_mnist", synthetic_root, val_size=56, check_sha256=False)
    torch.manual_seed(0)
    net = models.build_model("vgg6")
    pruned = asp.prune_to_pattern(net, "2:4")
    assert not pruned["conv1"] and all(v for k, v in pruned.items() if k != "conv1")  # 1 x 3 x 3 = 9: stays dense
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant",
                                                                  seed=0), progress=False)
    asp.prune_to_pattern(net, "1:4")  # sparser: among the survivors only
    training.fit(net, splits["train"], splits["val"], TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant",
                                                                  seed=0), progress=False)
    plain = magnitude.plain_copy(net)
    for name, layer in models.prunable_layers(plain).items():
        kept = _groups(layer.weight.detach() != 0, 4).sum(dim=1) if name != "conv1" else None
        assert kept is None or bool((kept == 1).all()), f"{name}: not exactly 1 of 4 in every group after retraining"


def _levels(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The weight's non-zeros snapped onto b-bit levels alpha * {+-1 .. +-2^(b-1)}: what a quantized pruned layer holds."""
    alpha = weight.abs().max() / 2 ** (bits - 1)
    return torch.where(weight != 0, torch.clamp(torch.round(weight / alpha), -2 ** (bits - 1), 2 ** (bits - 1)) * alpha, weight)


def test_an_nm_layer_is_stored_in_the_cheaper_nm_format_and_a_layer_without_the_pattern_dense() -> None:
    torch.manual_seed(0)
    weight, _ = nm.project(torch.randn(8, 16, 3, 3), "2:4")
    stored = storage.layer_storage(weight, "2:4", 32)
    groups = weight.numel() // 4
    # 2:4 in the fewest bits: ceil(log2 C(4, 2)) = 3 bits a group, against the hardware's 2 x 2 = 4
    assert stored["format"] == "nm_min" and stored["indices"] == 3 * groups
    assert stored["values"] == 2 * groups * 32 and stored["ideal_index_bits"] == pytest.approx(groups * math.log2(6))
    hardware = storage.stored_layer(weight, "nm_hw", 32, scheme="2:4")
    assert hardware["indices"] == 4 * groups and hardware["total_bits"] > stored["total_bits"]
    # the pruner left it dense, or its reduction (one input channel x 3 x 3 = 9) is no multiple of 4: dense
    assert storage.layer_storage(torch.randn(8, 16, 3, 3), "2:4", 32)["format"] == "dense"
    assert storage.layer_storage(torch.randn(8, 1, 3, 3), "2:4", 32)["format"] == "dense"
    quantized = storage.layer_storage(_levels(weight, 8), "2:4", 8)  # survivors on 2^8 non-zero levels, no zero code
    assert quantized["format"] == "nm_min" and quantized["values"] == 2 * groups * 8
    with pytest.raises(ValueError, match="an N:M pattern such as 2:4"):
        storage.layer_storage(weight, "2of4", 32)


def test_nm_energy_multiplies_every_slot_and_selects_each_by_its_metadata() -> None:
    from study.costs import energy

    torch.manual_seed(1)
    weight, _ = nm.project(torch.randn(16, 32), "1:4")
    weight[0, :4] = 0  # an empty group still holds its one slot
    stored = storage.layer_storage(weight, "1:4", 32)
    counts = energy.layer_counts(weight, 3, stored, 32, energy.EnergyConfig(lanes=4), "1:4")
    slots = 16 * 32 // 4
    assert counts["macs"] == slots * 3 and counts["index_decodes"] == slots * 3  # one select a slot, each position
    assert counts["sram_index_bits"] == stored["indices"] * 3 and counts["fillers"] == 0
    assert counts["stored_bits"] == stored["total_bits"]
    assert counts["macs"] > int(np.count_nonzero(weight.numpy())) * 3  # the empty group's zero slot is multiplied too


def test_the_nm_scheme_stores_each_layer_in_the_cheapest_pattern_it_keeps() -> None:
    from study.costs import energy

    torch.manual_seed(2)
    weight, _ = nm.project(torch.randn(8, 32), "1:4")  # keeps 1:4, hence 2:8 too (at most 2 in every 8)
    row = storage.layer_storage(weight, "nm", 32)
    # 1:4: 2 bits a group of 4 (0.5 a weight); 2:8: ceil(log2 28) = 5 bits a group of 8 (0.625 a weight)
    assert row["pattern"] == "1:4" and row["indices"] == 2 * weight.numel() // 4  # 1:4: both formats spend 2 bits
    two_of_eight = storage.layer_storage(weight, "2:8", 32)
    assert two_of_eight["total_bits"] > row["total_bits"] and two_of_eight["pattern"] == "2:8"
    counts = energy.layer_counts(weight, 1, row, 32, energy.EnergyConfig(lanes=4), "nm")
    assert counts["macs"] == weight.numel() // 4  # one slot a group of 4: the layer's own pattern, not the scheme's
    dense = storage.layer_storage(torch.randn(8, 32), "nm", 32)
    assert dense["format"] == "dense" and "pattern" not in dense


def test_a_model_pruned_to_a_pattern_is_read_as_nm_and_a_very_sparse_irregular_one_is_not() -> None:
    from study.core import models
    from study.costs import pricing

    torch.manual_seed(3)
    net = models.build_model("lenet5")
    with torch.no_grad():
        for name, layer in models.prunable_layers(net).items():
            if nm.applies(layer.weight, 4):
                layer.weight.copy_(nm.project(layer.weight, "2:4")[0])
    assert pricing.detect_scheme(net) == "nm"  # conv1 (one input channel, 5 x 5) stays dense
    with torch.no_grad():
        for layer in models.prunable_layers(net).values():
            layer.weight.mul_((torch.rand_like(layer.weight) < 0.01).float())  # 100x irregular: at most 2 of 8 nearly everywhere
    assert pricing.detect_scheme(net) == "irregular"


def test_the_public_api_compresses_prices_saves_and_loads_an_nm_model(tmp_path) -> None:
    import study
    from study.core import models

    torch.manual_seed(4)
    net = models.build_model("lenet5")
    small = study.compress(net, scheme="2:4", rate=1, weight_bits=8, input_shape=(1, 28, 28))
    table = study.price(small, weight_bits=8, input_shape=(1, 28, 28))  # the scheme read from the zeros
    assert table.attrs["scheme"] == "nm"
    layers = table[table["layer"] != "total"] if "layer" in table else table
    assert {"nm_hw", "nm_min"} & set(layers["format"].astype(str).str.split(" ").str[0])
    path = tmp_path / "lenet-2of4.stm"
    study.save(small, path, weight_bits=8, input_shape=(1, 28, 28), name="lenet5")
    again = study.load(path)
    for (name, a), b in zip(models.prunable_layers(small).items(), models.prunable_layers(again).values()):
        assert torch.equal(a.weight, b.weight), name
    with pytest.raises(ValueError, match="an N:M pattern such as 2:4"):
        study.compress(net, scheme="2of4", rate=2, weight_bits=8, input_shape=(1, 28, 28))
