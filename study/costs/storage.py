"""Storage of whole models: the best format per layer, the index-width choice, the ideal bound, break-even.

Built on :mod:`study.costs.encoding`, whose bit counts equal its real streams. Structured models are
compacted first (removed filters take the next layer's input channels with them), so their storage is
that of the physically smaller model; irregular layers take the cheapest of the sparse formats (and
dense, should a layer be dense enough that indices cost more than zeros).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from study.compression import compaction
from study.contract import NM_PATTERNS, NM_SCHEME, SCHEMES, STRUCTURED_SCHEMES, is_nm, nm_pattern
from study.core import models
from study.costs import encoding

STRUCTURE_CATEGORIES = ("pointers", "indices", "fillers")


def index_bound_bits(n: int, k: int) -> float:
    """log2 C(n, k): the fewest bits any code can spend to say which k of n positions are non-zero."""
    if not 0 <= k <= n:
        raise ValueError(f"k={k} non-zeros among n={n} positions")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def structure_bits(weight: object, fmt: str, index_bits: int = 4, scheme: str = "filter") -> dict[str, int]:
    """Pointer, index and filler bits of ``fmt`` for the zero pattern of ``weight`` (values ignored)."""
    matrix, shape = encoding.as_matrix(weight)
    counts = encoding.count_bits((matrix != 0).astype(np.float32).reshape(shape), fmt, 32, index_bits, scheme)
    return {c: counts[c] for c in STRUCTURE_CATEGORIES}


def relative_structure_bits(weight: object, fmt: str, candidates: Iterable[int] = encoding.INDEX_BITS) -> dict[int, int]:
    """Pointer + run-code bits of a relative-index format at each candidate width, from the zero runs found once.

    What ``encoding.structure_sections`` writes, counted without writing it: at width b a run of r zeros takes
    r // (2^b - 1) fillers, so ``codes`` = non-zeros + fillers run codes of b bits, and one pointer per row wide enough
    for ``codes`` (a test holds it equal to ``structure_bits`` for every width). One pass over the matrix instead of
    one per width: pricing a model tries 16 widths for 2 formats in every layer.
    """
    if fmt not in encoding.RELATIVE_FORMATS:
        raise ValueError(f"format={fmt!r}; relative-index formats: {list(encoding.RELATIVE_FORMATS)}")
    matrix, _ = encoding.as_matrix(weight)
    rows = matrix if fmt == "rel_csr" else np.ascontiguousarray(matrix.T)
    _, runs = encoding.zero_runs(rows)
    totals = {}
    for width in candidates:
        codes = runs.size + int((runs // ((1 << encoding.check_index_bits(width)) - 1)).sum())
        totals[width] = rows.shape[0] * encoding.width_for(codes) + codes * width
    return totals


def best_index_bits(weight: object, fmt: str, candidates: Iterable[int] = encoding.INDEX_BITS) -> int:
    """The run-length width that minimises the structure bits of a relative-index format.

    Value bits do not depend on the index width, so the smallest structure wins for every b_w.
    """
    totals = relative_structure_bits(weight, fmt, candidates)
    return min(totals, key=lambda b: (totals[b], b))


def layer_storage(weight: object, scheme: str, weight_bits: int, index_bits: int | None = None,
                  formats: Sequence[str] = encoding.SPARSE_FORMATS) -> dict[str, object]:
    """The stored bits of one layer under ``scheme``: format, index width, breakdown, total, ideal index bits.

    ``index_bits=None`` picks the best width per layer for the relative formats; an int fixes it. An N:M pattern as
    ``scheme`` ("2:4") stores each layer whose weights keep the pattern in the cheaper N:M format (the hardware's
    layout or the fewest bits per group), and a layer that does not (its reduction length is no multiple of M, or
    the pruner left it dense) dense: each layer is stored as what it is. ``scheme="nm"`` does so with the cheapest of
    the patterns ``NM_PATTERNS`` the layer keeps (a 1:4 layer also keeps 2:8; the row's ``pattern`` says which).
    """
    if scheme not in SCHEMES and not is_nm(scheme):  # SCHEMES holds "nm": the cheapest pattern each layer keeps
        raise ValueError(f"scheme={scheme!r}; allowed: {list(SCHEMES)} or an N:M pattern such as 2:4")
    matrix, shape = encoding.as_matrix(weight)
    semi = is_nm(scheme) or scheme == NM_SCHEME
    candidates: list[tuple[str, int | str]]  # (format, run-length width or N:M pattern)
    if scheme == "dense":
        candidates = [("dense", 0)]
    elif scheme == "irregular":
        unknown = [f for f in formats if f not in encoding.SPARSE_FORMATS]
        if unknown:
            raise ValueError(f"formats {unknown} are not sparse formats; allowed: {list(encoding.SPARSE_FORMATS)}")
        candidates = [("dense", 0)]
        for fmt in formats:
            if fmt in encoding.RELATIVE_FORMATS:
                width = best_index_bits(matrix.reshape(shape), fmt) if index_bits is None else encoding.check_index_bits(index_bits)
                candidates.append((fmt, width))
            else:
                candidates.append((fmt, 0))
    elif semi:
        patterns = NM_PATTERNS if scheme == NM_SCHEME else (scheme,)
        candidates = [("dense", 0), *((fmt, pattern) for pattern in patterns for fmt in encoding.NM_FORMATS)]
    else:
        candidates = [("structured", 0)]
    rows, refused = [], []
    for fmt, width in candidates:
        try:
            if fmt in encoding.NM_FORMATS:  # ``width`` carries the pattern
                rows.append(stored_layer(matrix.reshape(shape), fmt, weight_bits, None, str(width)) | {"pattern": width})
            else:
                rows.append(stored_layer(matrix.reshape(shape), fmt, weight_bits, width or None, scheme))
        except encoding.EncodingError as error:
            # dense storage of a pruned layer needs a code for zero, which its 2^b survivor levels leave none for;
            # an N:M format refuses a layer that does not keep the pattern
            if not (fmt in encoding.NM_FORMATS or (fmt == "dense" and (scheme == "irregular" or semi))):
                raise
            refused.append(str(error))
    if not rows:
        raise encoding.EncodingError(f"no format stores this layer under {scheme}: {'; '.join(refused)}")
    return min(rows, key=lambda r: r["total_bits"])


def stored_layer(weight: object, fmt: str, weight_bits: int, index_bits: int | None = None,
                 scheme: str = "filter") -> dict[str, object]:
    """The stored bits of one layer in one given format (``index_bits`` only for the relative formats; ``scheme``: the
    structured scheme, or the N:M pattern of an N:M format)."""
    matrix, shape = encoding.as_matrix(weight)
    bits = encoding.count_bits(matrix.reshape(shape), fmt, weight_bits, index_bits or 4, scheme)
    nnz = int(np.count_nonzero(matrix))
    if fmt == "structured":  # the choice to describe is which groups survive
        kept = encoding.group_view(matrix, shape, scheme).any(axis=1)
        ideal = index_bound_bits(kept.size, int(kept.sum()))
    elif fmt in encoding.NM_FORMATS:  # which N of each group's M positions: log2 C(M, N) a group
        n, m = nm_pattern(scheme)
        ideal = matrix.size // m * index_bound_bits(m, n)
    else:
        ideal = index_bound_bits(matrix.size, nnz)
    return {
        "format": fmt,
        "value_form": "scale" if bits["scale"] else ("codebook" if bits["codebook"] else "float32"),
        "index_bits": index_bits if fmt in encoding.RELATIVE_FORMATS else None,
        "weights": int(matrix.size),
        "nonzero": nnz,
        **bits,
        "total_bits": sum(bits.values()),
        "ideal_index_bits": ideal,
    }


def storable(model: nn.Module, scheme: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The model whose weights are stored: structured models compacted, the others as they are."""
    if scheme in STRUCTURED_SCHEMES:
        return compaction.compact(model, input_shape)[0]
    return model


def layer_rows(model: nn.Module, scheme: str, weight_bits: int, input_shape: tuple[int, ...],
               index_bits: int | None = None, formats: Sequence[str] = encoding.SPARSE_FORMATS) -> dict[str, dict[str, object]]:
    """:func:`layer_storage` of every conv/FC layer of the stored model, by name (the energy model reads them too)."""
    stored = storable(model, scheme, input_shape)
    return {name: layer_storage(layer.weight, scheme, weight_bits, index_bits, formats)
            for name, layer in models.prunable_layers(stored).items()}


def model_storage(model: nn.Module, scheme: str, weight_bits: int, input_shape: tuple[int, ...],
                  index_bits: int | None = None, formats: Sequence[str] = encoding.SPARSE_FORMATS,
                  rows: Mapping[str, Mapping[str, object]] | None = None) -> pd.DataFrame:
    """One row per conv/FC layer of the stored model (see :func:`layer_storage`); ``rows``: :func:`layer_rows`,
    when the caller has them already."""
    rows = rows if rows is not None else layer_rows(model, scheme, weight_bits, input_shape, index_bits, formats)
    return pd.DataFrame([{"layer": name, **row} for name, row in rows.items()])


def summarize(layers: pd.DataFrame, dense_weights: int) -> dict[str, float]:
    """Model totals of a :func:`model_storage` table; the ratio is against the fp32 dense model."""
    total = int(layers["total_bits"].sum())
    return {
        **{c: int(layers[c].sum()) for c in encoding.CATEGORIES},
        "total_bits": total,
        "total_kb": total / 8 / 1024,
        "nonzero": int(layers["nonzero"].sum()),
        "pruning_rate": dense_weights / max(1, int(layers["nonzero"].sum())),
        "compression_ratio": dense_weights * 32 / total,
        "ideal_index_bits": float(layers["ideal_index_bits"].sum()),
    }


def format_comparison(weights: Mapping[str, torch.Tensor], formats: Sequence[str] = encoding.SPARSE_FORMATS,
                      index_bits: int | None = None) -> pd.DataFrame:
    """Every sparse format's structure bits per layer beside the ideal bound (efficiency = bound / actual)."""
    rows = []
    for name, weight in weights.items():
        matrix, shape = encoding.as_matrix(weight)
        bound = index_bound_bits(matrix.size, int(np.count_nonzero(matrix)))
        for fmt in formats:
            width = None
            if fmt in encoding.RELATIVE_FORMATS:
                width = best_index_bits(weight, fmt) if index_bits is None else index_bits
            bits = structure_bits(weight, fmt, width or 4)
            actual = sum(bits.values())
            rows.append({"layer": name, "format": fmt, "index_bits": width, **bits, "structure_bits": actual,
                         "ideal_index_bits": bound, "efficiency": bound / actual if actual else 1.0})
    return pd.DataFrame(rows)


def break_even_closed_form(weight_bits: int, index_bits: int) -> float:
    """The rate ratio irregular/structured above which irregular storage is smaller: (b_w + b_idx) / b_w."""
    return (weight_bits + index_bits) / weight_bits


def _mask_overhead(weights: Mapping[str, torch.Tensor], index_bits: int, formats: Sequence[str]) -> tuple[int, int]:
    """(pointer + index + filler bits, non-zeros) of the masks, each layer in its cheaper format."""
    overhead = nonzero = 0
    for weight in weights.values():
        overhead += min(sum(structure_bits(weight, fmt, index_bits).values()) for fmt in formats)
        nonzero += int(np.count_nonzero(encoding.as_matrix(weight)[0]))
    if nonzero == 0:
        raise ValueError("the weights have no non-zero entry: no break-even to measure")
    return overhead, nonzero


def break_even_measured(weights: Mapping[str, torch.Tensor], weight_bits: int, index_bits: int,
                        formats: Sequence[str] = encoding.RELATIVE_FORMATS) -> float:
    """The same ratio from real encodings of real masks: (values + pointers + indices + fillers) / values.

    A structured model with the same non-zero count stores ``nnz * b_w`` bits, so the irregular model
    must prune this many times more for equal storage. Each layer takes its cheaper format.
    """
    overhead, nonzero = _mask_overhead(weights, index_bits, formats)
    return 1 + overhead / (nonzero * weight_bits)


def break_even_grid(weights: Mapping[str, torch.Tensor], weight_bits: Sequence[int], index_bits: Sequence[int]) -> pd.DataFrame:
    """Closed-form and measured break-even ratios over a b_w x b_idx grid (long format, one row per cell).

    The masks' overhead depends on b_idx only, so it is measured once per index width.
    """
    overheads = {bi: _mask_overhead(weights, bi, encoding.RELATIVE_FORMATS) for bi in index_bits}
    return pd.DataFrame([
        {"weight_bits": bw, "index_bits": bi, "closed_form": break_even_closed_form(bw, bi),
         "measured": 1 + overheads[bi][0] / (overheads[bi][1] * bw)}
        for bw in weight_bits for bi in index_bits
    ])


def ideal_comparison(irregular: Mapping[str, torch.Tensor], structured_nonzero: int, weight_bits: Sequence[int]) -> pd.DataFrame:
    """Irregular storage with a perfect index code (the bound) against structured storage, per b_w.

    The strongest case for irregular pruning: if structured storage is still smaller, no index
    format can rescue irregular pruning at that bit width.
    """
    matrices = [encoding.as_matrix(w)[0] for w in irregular.values()]
    nonzero = sum(int(np.count_nonzero(m)) for m in matrices)
    bound = sum(index_bound_bits(m.size, int(np.count_nonzero(m))) for m in matrices)
    rows = []
    for bw in weight_bits:
        ideal = nonzero * bw + bound
        rows.append({"weight_bits": bw, "irregular_ideal_bits": ideal, "structured_bits": structured_nonzero * bw,
                     "structured_wins": structured_nonzero * bw < ideal})
    return pd.DataFrame(rows)
