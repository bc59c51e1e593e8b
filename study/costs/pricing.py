"""A model's price as stored: per layer its format, bits by part, KB, the information bound and the energy of one
inference under both memory assumptions. One table for the explorer's whole-model view and for ``study.price``.

Also what pricing a model from outside the pipeline needs to know about it: which scheme its zeros follow, which
layers are not yet on the levels of a bit width, and the energy table it is priced with by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from study.compression import nm
from study.contract import FULL_PRECISION_BITS, NM_PATTERNS, NM_SCHEME, SPARSE_FORMATS, STRUCTURED_SCHEMES, nm_pattern
from study.core import models
from study.costs import encoding, energy, storage

BIT_COLUMNS = ("value bits", "index bits", "filler bits", "pointer bits", "scale, codebook, header bits", "total bits")

# params.yaml's energy table (tests keep the two equal), for a model priced without the study's parameters:
# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, pJ per operation; memory per 32 bits as EIE and Deep
# Compression count it (SRAM 5 pJ, DRAM 640 pJ); an idle lane-cycle ~10% of an 8-bit MAC (an assumption).
DEFAULT_TABLE_PJ = {"int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1, "fp32_add": 0.9,
                    "fp32_mult": 3.7, "sram_32bit_read": 5.0, "dram_32bit_read": 640.0, "idle_lane_cycle": 0.023}


def price_table(net: nn.Module, scheme: str, weight_bits: int, input_shape: tuple[int, ...], table_pj: Mapping[str, float],
                config: energy.EnergyConfig, index_bits: int | None = None,
                formats: Sequence[str] = SPARSE_FORMATS) -> pd.DataFrame:
    """One row per layer of the stored model (structured: compacted) and a total row: format, bits by part, KB, the
    log2 C(n, k) bound of its index, energy per inference with the weights from DRAM and with them on chip (when the
    whole model fits). The storage and energy stages' own functions (``storage.model_storage``, ``energy.model_energy``)."""
    rows = storage.layer_rows(net, scheme, weight_bits, input_shape, index_bits, formats)
    bits = storage.model_storage(net, scheme, weight_bits, input_shape, rows=rows)
    spent = energy.model_energy(net, scheme, weight_bits, input_shape, table_pj, config, stored_layers=rows)
    fits = energy.fits_on_chip(float(bits["total_bits"].sum()), config)
    dram = [f"{c}_pj" for c in energy.DRAM_COMPONENTS]
    table = pd.DataFrame({
        "layer": bits["layer"],
        "format": bits["format"] + bits["index_bits"].map(lambda b: f", {int(b)}-bit runs" if pd.notna(b) else ""),
        "non-zero weights": bits["nonzero"],
        "value bits": bits["values"],
        "index bits": bits["indices"],
        "filler bits": bits["fillers"],
        "pointer bits": bits["pointers"],
        "scale, codebook, header bits": bits["scale"] + bits["codebook"] + bits["header"],
        "total bits": bits["total_bits"],
        "KB": bits["total_bits"] / 8 / 1024,
        "index bound (bits)": bits["ideal_index_bits"],
        "energy, weights from DRAM (nJ)": spent["total_pj"] / 1000,
        "energy, weights on chip (nJ)": (spent["total_pj"] - (spent[dram].sum(axis=1) if fits else 0)) / 1000,
    })
    counts = ["non-zero weights", *BIT_COLUMNS]
    table[counts] = table[counts].astype("int64")  # whole bits: a page must not show 500 bits as "500.000"
    total = table.drop(columns=["layer", "format"]).sum().to_frame().T.assign(layer="total", format="")
    total[counts] = total[counts].astype("int64")
    return pd.concat([table, total[table.columns]], ignore_index=True)


def _zeros_are_whole_groups(weight: object, scheme: str) -> bool:
    matrix, shape = encoding.as_matrix(weight)
    zero = encoding.group_view(matrix, shape, scheme) == 0
    return bool((zero.any(axis=1) == zero.all(axis=1)).all())


def keeps_a_pattern(weight: torch.Tensor) -> bool:
    """Whether a layer was pruned to one of the N:M patterns: at most N non-zeros in every group of M (input channels
    innermost), and nearly N in each on average (at least 90% of N/M of its weights left). A very sparse irregular
    layer also has at most N in every group; it is not N:M-pruned, and its own formats store it cheaper."""
    for pattern in NM_PATTERNS:
        n, m = nm_pattern(pattern)
        if not nm.applies(weight, m):
            continue
        kept = nm.reduction_view(weight).reshape(-1, m).ne(0).sum(dim=1)
        if bool((kept <= n).all()) and float(kept.float().mean()) >= 0.9 * n:
            return True
    return False


def detect_scheme(net: nn.Module) -> str:
    """The scheme a model's zeros follow: ``dense`` without zeros; else the first of filter, channel, column whose
    whole groups hold every zero of every layer; else ``nm`` where every layer with zeros keeps an N:M pattern (and
    the others have none); else ``irregular``."""
    weights = [layer.weight.detach() for layer in models.prunable_layers(net).values()]
    if all(bool(w.ne(0).all()) for w in weights):
        return "dense"
    for scheme in STRUCTURED_SCHEMES:
        if all(_zeros_are_whole_groups(w, scheme) for w in weights):
            return scheme
    if all(bool(w.ne(0).all()) or keeps_a_pattern(w) for w in weights):
        return NM_SCHEME
    return "irregular"


def off_levels(net: nn.Module, weight_bits: int) -> list[str]:
    """The layers whose non-zero weights are not on one b-bit grid (a scale times integer levels), which the encoders
    store as scale + codes: off it, a layer could only be stored with a codebook, or not at all. None at 32 bits."""
    if weight_bits == FULL_PRECISION_BITS:
        return []
    found = []
    for name, layer in models.prunable_layers(net).items():
        matrix, _ = encoding.as_matrix(layer.weight.detach())
        survivors = matrix[matrix != 0]
        if survivors.size and encoding.uniform_scale(survivors, weight_bits) is None:
            found.append(name)
    return found


# Modules whose parameters the study stores as they are (float32) and does not price, as it does not price biases:
# normalization layers' scales and shifts.
NORMALIZATION = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)


def not_priced(net: nn.Module) -> list[dict[str, object]]:
    """Modules with weights of their own that the price leaves out, with their type and parameter count: anything but
    ``Conv2d`` and ``Linear`` (priced) and normalization layers (stored as float32, like biases)."""
    found = []
    for name, module in net.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own and not isinstance(module, (nn.Conv2d, nn.Linear, *NORMALIZATION)):
            found.append({"module": name, "type": type(module).__name__, "parameters": own})
    return found
