"""One layer, one choice: prune it, quantize it, store it, price it. The explorer's callbacks, as plain functions.

Every number comes from the functions the pipeline uses (``study.compression.constraints`` for the
Euclidean projections and levels, ``study.costs.storage``/``encoding`` for the bit-exact formats,
``study.costs.energy`` for the counts and the table), applied to a single layer in one shot, without
retraining. So the explorer shows how the pipeline accounts, on whatever layer and rate a learner picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from study.compression import constraints, nm, scale_fit
from study.contract import FULL_PRECISION_BITS, NM_PATTERNS, PRUNING_SCHEMES, QUANTIZED_BITS, is_nm, nm_pattern
from study.costs import encoding, energy, storage

INDEX_FORMATS = ("auto", *encoding.SPARSE_FORMATS)  # auto: the cheapest sparse format (or dense), as the pipeline picks
WEIGHT_BITS = (FULL_PRECISION_BITS, *QUANTIZED_BITS)
STORAGE_PARTS = ("values", "indices", "fillers", "pointers", "scale", "codebook", "header")
SCHEME_CHOICES = (*PRUNING_SCHEMES, *NM_PATTERNS)  # an N:M pattern is a scheme whose rate it fixes (M / N)


@dataclass(frozen=True)
class Choice:
    """What a learner sets: a layer, a scheme, the layer's pruning rate, weight bits, and the index format.

    An N:M pattern as the scheme ("2:4") fixes the rate at M / N: ``rate`` is then ignored."""

    layer: str
    scheme: str = "irregular"
    rate: float = 10.0  # layer weights / kept weights (structured: of the kept groups; N:M: M / N, whatever is set)
    weight_bits: int = 4
    index_format: str = "auto"  # irregular only; structured layers store one flag per group
    index_bits: int | None = None  # relative formats only: None picks the cheapest width

    def __post_init__(self) -> None:
        if self.scheme not in PRUNING_SCHEMES and not is_nm(self.scheme):
            raise ValueError(f"scheme={self.scheme!r}; choose one of {list(SCHEME_CHOICES)} (or another N:M pattern)")
        if is_nm(self.scheme):
            n, m = nm_pattern(self.scheme)
            object.__setattr__(self, "rate", m / n)  # the pattern's rate, whatever the slider said
        if not self.rate >= 1.0:
            raise ValueError(f"rate={self.rate}: a pruning rate is total / kept weights, at least 1")
        if self.weight_bits not in WEIGHT_BITS:
            raise ValueError(f"weight_bits={self.weight_bits}; choose one of {list(WEIGHT_BITS)}")
        if self.index_format not in INDEX_FORMATS:
            raise ValueError(f"index_format={self.index_format!r}; choose one of {list(INDEX_FORMATS)}")
        if self.index_bits is not None:
            encoding.check_index_bits(self.index_bits)


def prune(weight: torch.Tensor, scheme: str, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Euclidean projection keeping ``1/rate`` of the layer's units (at least one): (pruned weight, mask). An N:M
    pattern keeps the N largest of each group of M (``study.compression.nm``); a layer whose reduction length is no
    multiple of M stays dense, as the pipeline leaves it."""
    if is_nm(scheme):
        if not nm.applies(weight, nm_pattern(scheme)[1]):
            return weight.detach().clone(), torch.ones_like(weight)
        return nm.project(weight.detach(), scheme)
    units = constraints.group_count(weight, scheme)
    return constraints.project_pruned(weight.detach(), scheme, constraints.keep_count(units, 1.0 / rate))


def quantize(weight: torch.Tensor, mask: torch.Tensor, bits: int) -> tuple[torch.Tensor, float | None]:
    """Survivors to their nearest non-zero b-bit level, with the scale fitted on them: (weight, alpha).

    32 bits leaves the weights as they are (alpha ``None``).
    """
    if bits == FULL_PRECISION_BITS:
        return weight.detach() * mask, None
    alpha = scale_fit.fit_alpha(weight, bits, mask)
    quantized, _ = constraints.project_quantized(weight, alpha, bits, mask)
    return quantized, alpha


def stored(weight: torch.Tensor, scheme: str, bits: int, index_format: str = "auto",
           index_bits: int | None = None) -> dict[str, Any]:
    """The layer's stored bits by part (a row of ``storage.stored_layer``), from the real encoders.

    Structured schemes store the kept groups densely plus one flag per group; N:M layers the cheaper N:M format
    (the hardware's layout or the minimal code; dense where the pattern does not apply); irregular layers take
    ``index_format`` (``auto``: the cheapest format and run-length width, dense included).
    """
    if is_nm(scheme):
        return storage.layer_storage(weight, scheme, bits)
    if scheme != "irregular":
        return storage.stored_layer(weight, "structured", bits, scheme=scheme)
    if index_format == "auto":
        return storage.layer_storage(weight, "irregular", bits, index_bits)
    if index_format in encoding.RELATIVE_FORMATS and index_bits is None:
        index_bits = storage.best_index_bits(weight, index_format)
    return storage.stored_layer(weight, index_format, bits, index_bits if index_format in encoding.RELATIVE_FORMATS else None)


def energy_parts(weight: torch.Tensor, scheme: str, positions: int, row: dict[str, Any], bits: int,
                 table: dict[str, float], config: energy.EnergyConfig) -> dict[str, float]:
    """pJ per component of one inference through this layer (``study.costs.energy``), with the counts.

    A structured layer computes its kept groups only; a removed filter also removes the next layer's input
    channel, which one layer alone cannot show.
    """
    counts = energy.layer_counts(weight, positions, row, bits, config, scheme)
    return {**energy.energy_of(counts, energy.check_table(table), bits, config), "counts": counts}


def compress(weight: torch.Tensor, scheme: str, rate: float, bits: int, index_format: str = "auto",
             index_bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None, dict[str, Any]]:
    """Prune, quantize and store one layer: (pruned, mask, quantized, alpha, stored row)."""
    pruned, mask = prune(weight, scheme, rate)
    quantized, alpha = quantize(pruned, mask, bits)
    return pruned, mask, quantized, alpha, stored(quantized, scheme, bits, index_format, index_bits)


def breakdown(weight: torch.Tensor, choice: Choice, positions: int, table: dict[str, float],
              config: energy.EnergyConfig) -> dict[str, Any]:
    """Everything the explorer shows for one choice on one layer's dense weight (no model needed)."""
    pruned, mask, quantized, alpha, row = compress(weight, choice.scheme, choice.rate, choice.weight_bits,
                                                   choice.index_format, choice.index_bits)
    parts = energy_parts(quantized, choice.scheme, positions, row, choice.weight_bits, table, config)
    counts = parts.pop("counts")
    structure = row["pointers"] + row["indices"] + row["fillers"]
    return {
        "choice": choice,
        "dense": weight.detach(),
        "pruned": pruned,
        "quantized": quantized,
        "mask": mask,
        "alpha": alpha,
        "storage": row,
        "structure_bits": structure,
        "dense_fp32_bits": 32 * weight.numel(),
        "energy_pj": parts,
        "energy_counts": counts,
        "layer_rate": weight.numel() / max(int(torch.count_nonzero(quantized)), 1),
    }
