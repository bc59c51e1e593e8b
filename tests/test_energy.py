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
    assert counts["macs"] == 3 and counts["fillers"] == 3 and counts["index_decodes"] == 6
    # lanes: row 0 (3 entries) on lane 0, row 1 (3 entries) on lane 1
    assert counts["cycles"] == 3 and counts["idle_lane_cycles"] == 0 and counts["load_imbalance"] == 1.0
    # a filler reads no activation: one activation per MAC plus one write per output, 8 bits each
    assert counts["sram_activation_bits"] == (3 + 2) * 8
    assert counts["sram_weight_bits"] == 24 and counts["sram_index_bits"] == 3 + 3 + stored["pointers"]
    wide = energy.layer_counts(_tiny(), 1, stored, 8, energy.EnergyConfig(lanes=4, activation_bits=8))
    assert wide["cycles"] == 3 and wide["idle_lane_cycles"] == 4 * 3 - 6 and wide["load_imbalance"] == 2.0


def test_stored_bits_and_the_on_chip_assumption() -> None:
    stored = storage.stored_layer(_tiny(), "rel_csr", 8, index_bits=1)
    counts = energy.layer_counts(_tiny(), 1, stored, 8, EIGHT)
    assert counts["stored_bits"] == stored["total_bits"]  # every stored bit, nothing more
    pj = energy.energy_of(counts, TABLE, 8, EIGHT)
    assert pj["dram_weights"] > 0 and pj["dram_index"] > 0
    bits = stored["total_bits"]
    fits = energy.EnergyConfig(on_chip_kb=bits / 8 / 1024)  # exactly the model's size: it fits
    too_small = energy.EnergyConfig(on_chip_kb=(bits - 1) / 8 / 1024)
    assert energy.fits_on_chip(bits, fits) and not energy.fits_on_chip(bits, too_small)
    on_chip = energy.on_chip_components(pj, bits, fits)
    assert on_chip["dram_weights"] == on_chip["dram_index"] == 0.0
    assert {c: on_chip[c] for c in pj if c not in energy.DRAM_COMPONENTS} == \
        {c: pj[c] for c in pj if c not in energy.DRAM_COMPONENTS}  # MACs, decoding, lanes, SRAM unchanged
    assert energy.on_chip_components(pj, bits, too_small) == pj  # a model that does not fit still streams
    with pytest.raises(ValueError, match="on_chip_kb=-1"):
        energy.EnergyConfig(on_chip_kb=-1)


def test_fillers_cost_an_index_read_and_an_add_not_a_mac() -> None:
    stored = storage.stored_layer(_tiny(), "rel_csr", 8, index_bits=1)
    pj = energy.energy_of(energy.layer_counts(_tiny(), 1, stored, 8, EIGHT), TABLE, 8, EIGHT)
    per_mac = sum(energy.mac_energy(TABLE, 8, EIGHT).values())
    assert pj["mac"] == pytest.approx(3 * per_mac)  # three values, no filler
    assert pj["index_decode"] == pytest.approx(6 * 0.03)  # 3 values + 3 fillers, one 8-bit add each
    assert pj["sram_index"] == pytest.approx((3 + 3 + stored["pointers"]) * 5.0 / 32)  # filler bits are read


def test_relative_csc_counts_work_fillers_and_memory_on_its_columns() -> None:
    # 2-bit runs (escape 3) down the columns of a 6x2 layer: column 0 keeps row 5 (run 5 = filler + 2),
    # column 1 keeps rows 0 and 1 (runs 0, 0): 3 non-zeros, 1 filler, all in the column streams.
    weight = torch.zeros(6, 2)
    weight[5, 0] = weight[0, 1] = weight[1, 1] = 1.0
    stored = storage.stored_layer(weight, "rel_csc", 8, index_bits=2)
    assert stored["fillers"] == 2 and stored["nonzero"] == 3
    assert energy.stream_entries(weight, "rel_csc", 2).tolist() == [2, 2]  # column 0: filler + value
    counts = energy.layer_counts(weight, 4, stored, 8, EIGHT)  # as a conv layer with 4 output positions
    assert counts["fillers"] == 1 * 4 and counts["index_decodes"] == (3 + 1) * 4
    assert int(energy.lane_work(energy.stream_entries(weight, "rel_csc", 2), 2, 4).sum()) == (3 + 1) * 4
    assert counts["cycles"] == 8 and counts["idle_lane_cycles"] == 0


def test_structured_layers_compute_only_their_kept_groups() -> None:
    # A 4x6 layer keeping 2 columns, 10 output positions: 4 rows x 2 columns x 10 = 80 MACs, not 240.
    weight = torch.zeros(4, 6)
    weight[:, 1] = 1.0
    weight[:, 4] = 2.0
    stored = storage.stored_layer(weight, "structured", 8, scheme="column")
    counts = energy.layer_counts(weight, 10, stored, 8, EIGHT, scheme="column")
    assert counts["macs"] == 80 and counts["sram_activation_bits"] == (80 + 4 * 10) * 8
    conv = torch.zeros(3, 4, 2, 2)  # channel pruning of a conv layer keeps channels 0 and 3 (4 columns each)
    conv[:, 0] = 1.0
    conv[:, 3] = 1.0
    assert energy.stream_entries(conv, "structured", None, "channel").tolist() == [8, 8, 8]
    rows = torch.zeros(3, 5)
    rows[1] = 1.0  # filter pruning keeps row 1: 5 MACs a position, one output
    filtered = energy.layer_counts(rows, 2, storage.stored_layer(rows, "structured", 8, scheme="filter"), 8, EIGHT, "filter")
    assert filtered["macs"] == 10 and filtered["sram_activation_bits"] == (10 + 2) * 8


def test_imbalance_on_a_skewed_mask() -> None:
    weight = torch.zeros(4, 8)
    weight[0] = 1.0  # lane 0 holds rows 0 and 2: 8 + 1 entries; lane 1 rows 1 and 3: 1 + 1
    weight[1, 0] = weight[2, 0] = weight[3, 0] = 1.0
    work = energy.lane_work(energy.stream_entries(weight, "csr", None), 2, 1)
    assert work.tolist() == [9, 2]
    stored = storage.stored_layer(weight, "csr", 8)
    counts = energy.layer_counts(weight, 1, stored, 8, EIGHT)
    assert counts["cycles"] == 9 and counts["idle_lane_cycles"] == 7
    assert counts["load_imbalance"] == pytest.approx(9 * 2 / 11)


def test_conv_positions_spread_over_lanes() -> None:
    weight = torch.ones(2, 1, 1, 1)
    work = energy.lane_work(energy.stream_entries(weight, "dense", None), 4, 6)  # 12 dot products of 1 MAC over 4 lanes
    assert work.tolist() == [3, 3, 3, 3]


def test_dense_model_macs_match_the_model_count() -> None:
    model = models.build_model("lenet5")
    table = energy.model_energy(model, "dense", 32, models.INPUT_SHAPES["lenet5"], TABLE, energy.EnergyConfig())
    assert table["macs"].sum() == sum(models.count_macs(model, models.INPUT_SHAPES["lenet5"]).values())
    assert (table["fillers"] == 0).all() and (table["index_decodes"] == 0).all()
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
