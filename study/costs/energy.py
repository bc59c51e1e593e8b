"""A transparent energy model of one inference: counts per layer times an energy table, by component.

Counts come from the real stored layers (``study.costs.storage``: format, index width, fillers, pointers), so
what irregular sparsity pays is measured on the real masks, not assumed. Conventions, each a choice a
user can read and change:

- One encoding for everything: the layer's stored stream decides the MACs, the lane work, the cycles,
  the fillers and the memory traffic. Its *streams* are the units a lane processes: rows for dense,
  structured, CSR, bitmap and relative-index CSR; columns for relative-index CSC.
- A weight *entry* (a value with its run length, or a filler) is read from on-chip SRAM once per use,
  i.e. once per output position of the layer; pointers once per stream per position. Every stored
  bit comes from DRAM once per inference (``batch`` inferences share one DRAM read): the *DRAM* memory
  assumption. Under the *on-chip* assumption a model whose stored bits fit ``on_chip_kb`` of SRAM keeps
  them there (as EIE does), loaded once and amortised over all inferences: its DRAM terms vanish, and
  MACs, index decoding, idle lanes and SRAM traffic decide. A model too large for it still streams.
- MACs are those the stored format performs: the non-zeros of a sparse format, every stored weight of a
  dense layer, the kept groups' weights of a structured layer (a column-pruned layer, which compaction
  cannot shrink, computes only its kept columns).
- One activation is read from SRAM per MAC and one written per output value (no reuse credited to any
  scheme, so the comparison stays like for like).
- A filler entry ("M zeros, no value") costs what a decoder spends on it: its index bits read from SRAM,
  one address add, and the lane cycle it occupies; no MAC and no activation read.
- Relative-index formats spend one address add per entry (run accumulation); CSR and bitmap one per
  non-zero.
- N:M formats (sparse tensor cores' 2:4 and kin) store exactly N slots per group of M, a free slot holding a zero:
  the hardware multiplies every slot, reads its metadata (log2 M bits in the hardware's layout, or the group's
  rank in the minimal code) from SRAM, and selects the slot's activation among the group's M by it: one operand
  select per slot, priced as one address add, as the other formats' index decoding is. No new table entry.
- Parallel array of ``lanes``: the (stream, output position) items are interleaved over the lanes (for an
  FC layer, stream i goes to lane i mod lanes, as EIE interleaves rows). A layer takes as many cycles as its
  busiest lane; the idle lane-cycles of the others cost ``idle_lane_cycle`` each.
- Arithmetic energy between the published bit widths follows the power law through Horowitz's 8- and
  32-bit integer points (multiply ~ b^2, add ~ b); a b_w x b_a multiply costs as a sqrt(b_w * b_a)-bit
  square one. 32-bit weights are float32 and use the float entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from study.core import models
from study.contract import nm_pattern
from study.costs import encoding, storage

MEMORY_ASSUMPTIONS = {
    "dram": "weights streamed from DRAM at every inference",
    "on_chip": "weights kept in on-chip SRAM when the stored model fits",
}
DRAM_COMPONENTS = ("dram_weights", "dram_index")
COMPONENTS = ("mac", "idle_lanes", "index_decode", "sram_weights", "sram_index", "sram_activations",
              "dram_weights", "dram_index")
TABLE_KEYS = ("int8_add", "int32_add", "int8_mult", "int32_mult", "fp32_add", "fp32_mult",
              "sram_32bit_read", "dram_32bit_read", "idle_lane_cycle")


@dataclass(frozen=True)
class EnergyConfig:
    """Everything the model assumes besides the table (see params.yaml ``energy``)."""

    lanes: int = 64
    activation_bits: int = 16
    accumulator_bits: int = 32
    batch: int = 1
    on_chip_kb: float = 256.0  # on-chip weight memory of the on-chip assumption (KB of 1024 bytes)

    def __post_init__(self) -> None:
        for name in ("lanes", "activation_bits", "accumulator_bits", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"energy.{name}={getattr(self, name)} must be >= 1")
        if not (math.isfinite(self.on_chip_kb) and self.on_chip_kb >= 0):
            raise ValueError(f"energy.on_chip_kb={self.on_chip_kb} must be a size in KB >= 0")


def check_table(table: Mapping[str, float]) -> dict[str, float]:
    """The energy table with every entry present, known and >= 0 (pJ); errors name the entry."""
    unknown = sorted(set(table) - set(TABLE_KEYS))
    if unknown:
        raise ValueError(f"energy table: unknown component(s) {unknown}; known: {list(TABLE_KEYS)}")
    missing = [k for k in TABLE_KEYS if k not in table]
    if missing:
        raise ValueError(f"energy table: missing entr(ies) {missing}; give each a value in pJ")
    bad = {k: v for k, v in table.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"energy table: entries must be finite numbers >= 0 pJ, got {bad}")
    return {k: float(table[k]) for k in TABLE_KEYS}


def _power_law(e8: float, e32: float, bits: float) -> float:
    """Energy at ``bits`` on the power law through (8, e8) and (32, e32)."""
    if e8 <= 0 or e32 <= 0:
        return e8 if bits <= 8 else e32  # a zeroed entry: no law to fit, keep the user's number
    exponent = math.log(e32 / e8) / math.log(4)
    return e8 * (bits / 8) ** exponent


def mac_energy(table: Mapping[str, float], weight_bits: int, config: EnergyConfig) -> dict[str, float]:
    """pJ of one multiply and one accumulate at the given operand widths."""
    if weight_bits == 32:
        return {"mult": table["fp32_mult"], "add": table["fp32_add"]}
    width = math.sqrt(weight_bits * config.activation_bits)
    return {"mult": _power_law(table["int8_mult"], table["int32_mult"], width),
            "add": _power_law(table["int8_add"], table["int32_add"], config.accumulator_bits)}


def stream_entries(weight: object, fmt: str, index_bits: int | None, scheme: str | None = None) -> np.ndarray:
    """Entries of each stream of the stored format, fillers included (see the module's conventions).

    Their sum is the layer's stored entries: non-zeros plus fillers for the relative formats, non-zeros for
    CSR and bitmap, every weight for dense, the kept groups' weights for structured (``scheme`` says which).
    """
    matrix, shape = encoding.as_matrix(weight)
    n_rows, n_cols = matrix.shape
    if fmt == "dense":
        return np.full(n_rows, n_cols, dtype=np.int64)
    if fmt == "structured":
        if scheme == "filter":
            return np.where(matrix.any(axis=1), n_cols, 0).astype(np.int64)
        if scheme in ("channel", "column"):
            per_group = 1 if scheme == "column" or len(shape) == 2 else int(np.prod(shape[2:]))
            kept = matrix.reshape(n_rows, -1, per_group).any(axis=(0, 2))
            return np.full(n_rows, int(kept.sum()) * per_group, dtype=np.int64)
        raise ValueError(f"scheme={scheme!r} for a structured layer; one of filter, channel, column")
    if fmt in encoding.NM_FORMATS:  # exactly N slots a group of M, a free slot holding a zero
        n, m = nm_pattern(scheme or "")
        return np.full(n_rows, n * (n_cols // m), dtype=np.int64)
    if fmt == "rel_csr":
        return encoding.relative_runs(matrix, index_bits or 4)[1]
    if fmt == "rel_csc":
        return encoding.relative_runs(np.ascontiguousarray(matrix.T), index_bits or 4)[1]
    return np.count_nonzero(matrix, axis=1).astype(np.int64)


def lane_work(entries: np.ndarray, lanes: int, positions: int) -> np.ndarray:
    """Entries each lane processes per inference: the (stream, position) items interleaved over the lanes."""
    work = np.zeros(lanes, dtype=np.int64)
    base, extra = divmod(positions, lanes)
    for stream, count in enumerate(entries):
        work += base * count
        first = (stream * positions) % lanes  # items stream*positions .. +positions-1 go to lanes in turn
        work[(first + np.arange(extra)) % lanes] += count
    return work


def layer_counts(weight: object, positions: int, stored: Mapping[str, object], weight_bits: int,
                 config: EnergyConfig, scheme: str | None = None) -> dict[str, float]:
    """Per-inference counts of one layer from its stored form (a row of ``storage.layer_storage``);
    ``scheme`` names the groups of a structured layer."""
    activation_bits = 32 if weight_bits == 32 else config.activation_bits  # fp32 models run in float32
    fmt, index_bits = stored["format"], stored["index_bits"]
    entries = stream_entries(weight, fmt, index_bits, stored.get("pattern") or scheme)  # an N:M layer's own pattern
    matrix, _ = encoding.as_matrix(weight)
    out_rows = int((entries > 0).sum()) if fmt == "structured" and scheme == "filter" else matrix.shape[0]
    nonzero = int(stored["nonzero"])
    fillers = int(stored["fillers"]) // int(index_bits) if fmt in encoding.RELATIVE_FORMATS and index_bits else 0
    dense_storage = fmt in ("dense", "structured")
    # N:M hardware multiplies every stored slot (a group's free slots hold zeros) and selects each slot's activation
    # by its metadata: one select per slot, priced as the other formats' index decoding
    slotted = fmt in encoding.NM_FORMATS
    macs = int(entries.sum()) if dense_storage or slotted else nonzero
    work = lane_work(entries, config.lanes, positions)
    busiest = int(work.max()) if work.size else 0
    value_bits = int(stored["values"])
    index_bits_stored = int(stored["indices"]) + int(stored["fillers"])
    decode = 0 if dense_storage else macs if slotted else (nonzero + fillers if fmt in encoding.RELATIVE_FORMATS else nonzero)
    return {
        "macs": macs * positions,
        "fillers": fillers * positions,
        "idle_lane_cycles": busiest * config.lanes - int(work.sum()),  # lane_work already spans all positions
        "cycles": busiest,
        "index_decodes": decode * positions,
        "sram_weight_bits": value_bits * positions,
        "sram_index_bits": 0 if dense_storage else (index_bits_stored + int(stored["pointers"])) * positions,
        "sram_activation_bits": (macs * positions + out_rows * positions) * activation_bits,
        "dram_weight_bits": (value_bits + int(stored["codebook"]) + int(stored["scale"])) / config.batch,
        "dram_index_bits": (index_bits_stored + int(stored["pointers"]) + int(stored["header"])) / config.batch,
        "stored_bits": value_bits + int(stored["codebook"]) + int(stored["scale"]) + index_bits_stored
                       + int(stored["pointers"]) + int(stored["header"]),
        "load_imbalance": busiest * config.lanes / work.sum() if work.sum() else 1.0,
    }


def energy_of(counts: Mapping[str, float], table: Mapping[str, float], weight_bits: int, config: EnergyConfig) -> dict[str, float]:
    """pJ per component: each a count times a table entry (so energy is linear in the table)."""
    mac = mac_energy(table, weight_bits, config)
    per_mac = mac["mult"] + mac["add"]
    sram_bit = table["sram_32bit_read"] / 32
    dram_bit = table["dram_32bit_read"] / 32
    index_add = _power_law(table["int8_add"], table["int32_add"], 8)  # address arithmetic in 8-bit adds
    return {
        "mac": counts["macs"] * per_mac,
        "idle_lanes": counts["idle_lane_cycles"] * table["idle_lane_cycle"],
        "index_decode": counts["index_decodes"] * index_add,
        "sram_weights": counts["sram_weight_bits"] * sram_bit,
        "sram_index": counts["sram_index_bits"] * sram_bit,
        "sram_activations": counts["sram_activation_bits"] * sram_bit,  # writes priced as reads
        "dram_weights": counts["dram_weight_bits"] * dram_bit,
        "dram_index": counts["dram_index_bits"] * dram_bit,
    }


def model_energy(model: nn.Module, scheme: str, weight_bits: int, input_shape: tuple[int, ...],
                 table: Mapping[str, float], config: EnergyConfig, index_bits: int | None = None,
                 formats: tuple[str, ...] = encoding.SPARSE_FORMATS,
                 stored_layers: Mapping[str, Mapping[str, object]] | None = None) -> pd.DataFrame:
    """One row per layer: counts and pJ per component, for the model as stored (structured: compacted).
    ``stored_layers``: ``storage.layer_rows`` of the same model and settings, when the caller priced storage already."""
    table = check_table(table)
    stored_model = storage.storable(model, scheme, input_shape)
    macs = models.count_macs(stored_model, input_shape)
    rows = []
    for name, layer in models.prunable_layers(stored_model).items():
        positions = macs[name] // layer.weight.numel()
        stored = (stored_layers[name] if stored_layers is not None
                  else storage.layer_storage(layer.weight, scheme, weight_bits, index_bits, formats))
        counts = layer_counts(layer.weight, positions, stored, weight_bits, config, scheme)
        energy = energy_of(counts, table, weight_bits, config)
        rows.append({"layer": name, "format": stored["format"], "positions": positions, **counts,
                     **{f"{c}_pj": e for c, e in energy.items()}, "total_pj": sum(energy.values())})
    return pd.DataFrame(rows)


def fits_on_chip(stored_bits: float, config: EnergyConfig) -> bool:
    """Whether a model of ``stored_bits`` (weights, indices, pointers, scales, headers) fits the on-chip memory."""
    return stored_bits <= config.on_chip_kb * 1024 * 8


def on_chip_components(components_pj: Mapping[str, float], stored_bits: float, config: EnergyConfig) -> dict[str, float]:
    """pJ per component under the on-chip assumption: the DRAM terms vanish for a model that fits."""
    fits = fits_on_chip(stored_bits, config)
    return {c: 0.0 if fits and c in DRAM_COMPONENTS else float(e) for c, e in components_pj.items()}
