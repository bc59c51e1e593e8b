"""Energy model: counts checked by hand on tiny layers, linearity in the table, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.core import models
from study.costs import energy, storage

TABLE = dict(int8_add=0.03, int32_add=0.1, int8_mult=0.2, int32_mult=3.1, fp32_add=0.9, fp32_mult=3.7,
             sram_32bit_read=5.0, dram_32bit_read=640.0, idle_lane_cycle=0.02)
EIGHT = energy.EnergyConfig(lanes=2, activation_bits=8, accumulator_bits=8)


def _tiny() -> torch.Tensor:
    """2x3 FC layer: row 0 keeps columns 0 and 2, row 1 keeps column 2."""
    return torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])


def test_hand_counted_fc_layer_with_fillers() -> None:
    # 1-bit runs (escape = 1): row 0 = value, filler, value; row 1 = filler, filler, value -> 3 fillers.
    stored = storage.stored_layer(_tiny(), "rel_csr", 8, index_bits=1)
    assert stored["fillers"] == 3 and stored["indices"] == 3 and stored["values"] == 3 * 8
    counts = energy.layer_counts(_tiny(), 1, stored, 8, EIGHT)
    assert counts["macs"] == 3 and counts["filler_macs"] == 3 and counts["index_decodes"] == 6
    assert counts["cycles"] == 3 and counts["idle_lane_cycles"] == 0 and counts["load_imbalance"] == 1.0
    # sram: one activation per MAC issued (values and fillers) plus one write per output, 8 bits each
    assert counts["sram_activation_bits"] == (3 + 3 + 2) * 8
    assert counts["sram_weight_bits"] == 24 and counts["sram_index_bits"] == 3 + 3 + stored["pointers"]
    wide = energy.layer_counts(_tiny(), 1, stored, 8, energy.EnergyConfig(lanes=4, activation_bits=8))
    assert wide["cycles"] == 3 and wide["idle_lane_cycles"] == 4 * 3 - 6 and wide["load_imbalance"] == 2.0


def test_imbalance_on_a_skewed_mask() -> None:
    weight = torch.zeros(4, 8)
    weight[0] = 1.0  # lane 0 holds rows 0 and 2: 8 + 1 entries; lane 1 rows 1 and 3: 1 + 1
    weight[1, 0] = weight[2, 0] = weight[3, 0] = 1.0
    work = energy.lane_work(weight, "csr", None, 2, 1)
    assert work.tolist() == [9, 2]
    stored = storage.stored_layer(weight, "csr", 8)
    counts = energy.layer_counts(weight, 1, stored, 8, EIGHT)
    assert counts["cycles"] == 9 and counts["idle_lane_cycles"] == 7
    assert counts["load_imbalance"] == pytest.approx(9 * 2 / 11)


def test_conv_positions_spread_over_lanes() -> None:
    weight = torch.ones(2, 1, 1, 1)
    work = energy.lane_work(weight, "dense", None, 4, 6)  # 12 dot products of 1 MAC over 4 lanes
    assert work.tolist() == [3, 3, 3, 3]


def test_dense_model_macs_match_the_model_count() -> None:
    model = models.build_model("lenet5")
    table = energy.model_energy(model, "dense", 32, models.INPUT_SHAPES["lenet5"], TABLE, energy.EnergyConfig())
    assert table["macs"].sum() == sum(models.count_macs(model, models.INPUT_SHAPES["lenet5"]).values())
    assert (table["filler_macs"] == 0).all() and (table["index_decodes"] == 0).all()
    assert table["total_pj"].sum() == pytest.approx(table[[c for c in table if c.endswith("_pj") and c != "total_pj"]].sum().sum())


def _energy(table: dict[str, float], config: energy.EnergyConfig = EIGHT) -> float:
    stored = storage.stored_layer(_tiny(), "rel_csc", 8, index_bits=2)
    counts = energy.layer_counts(_tiny(), 5, stored, 8, config)
    return sum(energy.energy_of(counts, table, 8, config).values())


def test_energy_is_linear_in_the_table() -> None:
    rng = np.random.default_rng(0)
    a = {k: float(v) for k, v in zip(energy.TABLE_KEYS, rng.uniform(0.1, 5, len(energy.TABLE_KEYS)))}
    b = {k: float(v) for k, v in zip(energy.TABLE_KEYS, rng.uniform(0.1, 5, len(energy.TABLE_KEYS)))}
    both = {k: a[k] + b[k] for k in a}
    assert _energy(both) == pytest.approx(_energy(a) + _energy(b))  # 8-bit operands: no interpolation
    scaled = {k: 3 * v for k, v in TABLE.items()}
    other = energy.EnergyConfig(lanes=3, activation_bits=16, accumulator_bits=24)
    assert _energy(scaled, other) == pytest.approx(3 * _energy(TABLE, other))  # interpolated widths scale too


def test_interpolation_hits_the_published_points() -> None:
    assert energy.mac_energy(TABLE, 8, energy.EnergyConfig(activation_bits=8, accumulator_bits=32)) == {
        "mult": pytest.approx(0.2), "add": pytest.approx(0.1)}
    four = energy.mac_energy(TABLE, 4, energy.EnergyConfig(activation_bits=4, accumulator_bits=8))
    assert four["mult"] < 0.2 and four["add"] == pytest.approx(0.03)
    assert energy.mac_energy(TABLE, 32, energy.EnergyConfig()) == {"mult": 3.7, "add": 0.9}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dram_32bit_read": -1.0}, "dram_32bit_read"),
        ({"sram_32bit_read": float("nan")}, "sram_32bit_read"),
        ({"int4_mult": 0.1}, "unknown component.*int4_mult"),
        ({"fp32_add": None}, "fp32_add"),
    ],
)
def test_bad_tables_are_refused_by_entry(change: dict, message: str) -> None:
    table = {**TABLE, **change}
    if change.get("fp32_add", 0) is None:
        del table["fp32_add"]
        message = "missing.*fp32_add"
    with pytest.raises(ValueError, match=message):
        energy.check_table(table)


def test_lanes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="energy.lanes=0"):
        energy.EnergyConfig(lanes=0)
