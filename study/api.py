"""The study's public verbs for anyone's PyTorch model: what it weighs as stored, and how to compress it one-shot.

Each is a few lines over the functions the pipeline itself prices and prunes with (``study.costs.pricing``,
``study.compression.pruning``, ``study.compression.quantize``): a model priced here costs what the study's own
tables would say it costs. Any module whose prunable layers are ``nn.Conv2d`` and ``nn.Linear`` works; residual
sums and batch norm are followed as the study follows them (``study.compression.coupling``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from study.compression import pruning, quantize
from study.contract import FULL_PRECISION_BITS, PRUNING_SCHEMES, QUANTIZED_BITS, SCHEMES, is_nm
from study.core import models
from study.costs import energy, model_file, pricing


def _checked(model: nn.Module, weight_bits: int, input_shape: Sequence[int], scheme: str | None) -> tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; pass a torch.nn.Module")
    if not models.prunable_layers(model):
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer: nothing to price")
    if weight_bits not in (*QUANTIZED_BITS, FULL_PRECISION_BITS):  # the widths the study quantizes to (1: binary)
        raise ValueError(f"weight_bits={weight_bits!r}; choose one of {[*QUANTIZED_BITS, FULL_PRECISION_BITS]}")
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; choose one of {list(SCHEMES)}, or None to read it from the zeros")
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape={tuple(input_shape)!r}: one input without its batch dimension, e.g. (3, 224, 224)")
    return shape


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the forward passes of compaction and MAC counting (batch norm must not update its
    statistics), then back in the mode it was in."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def _on_levels(model: nn.Module, weight_bits: int, scheme: str | None) -> tuple[nn.Module, str, list[str]]:
    """(the model as it will be stored, its scheme, the layers snapped to the b-bit grid): a copy where any layer was
    off the grid (snapped as the study snaps: least-squares scale, survivors stay non-zero), else the model itself."""
    scheme = scheme or pricing.detect_scheme(model)
    snapped = pricing.off_levels(model, weight_bits)
    if not snapped:
        return model, scheme, snapped
    stored = copy.deepcopy(model)
    quantize.snap_to_levels(stored, weight_bits, keep_support=scheme != "dense", layers=snapped)
    return stored, scheme, snapped


def price(model: nn.Module, *, weight_bits: int, input_shape: Sequence[int], scheme: str | None = None,
          index_bits: int | None = None, energy_table: Mapping[str, float] | None = None,
          energy_config: energy.EnergyConfig | None = None) -> pd.DataFrame:
    """What ``model`` weighs stored at ``weight_bits`` (32: float32), and what one inference costs: one row per layer
    and a total row (format, value / index / filler / pointer / scale bits, KB, the log2 C(n, k) bound of the index,
    energy with the weights from DRAM and on chip).

    ``scheme``: how the zeros are stored (irregular: the cheapest sparse format; filter, channel, column: the model
    compacted to a smaller dense one); None reads it from the zeros (``pricing.detect_scheme``). A layer not yet on
    a b-bit grid is put on it as the study snaps (least-squares scale, survivors stay non-zero) in a copy: the column
    ``quantized here`` says which. ``input_shape`` is one input, e.g. (3, 224, 224): MACs and compaction need it.
    The table's ``attrs`` hold the scheme, bits and input shape used, and ``not_priced``: the modules with weights
    of another kind than conv and FC (embeddings, 1-D convolutions...), each with its type and parameter count.
    """
    shape = _checked(model, weight_bits, input_shape, scheme)
    stored, scheme, snapped = _on_levels(model, weight_bits, scheme)
    with _evaluating(stored):
        table = pricing.price_table(stored, scheme, weight_bits, shape, energy_table or pricing.DEFAULT_TABLE_PJ,
                                    energy_config or energy.EnergyConfig(), index_bits)
    table.insert(2, "quantized here", table["layer"].isin(snapped))
    table.loc[table["layer"] == "total", "quantized here"] = bool(snapped)
    table.attrs.update(scheme=scheme, weight_bits=weight_bits, input_shape=shape, not_priced=pricing.not_priced(model))
    return table


def compress(model: nn.Module, *, scheme: str, rate: float, weight_bits: int = FULL_PRECISION_BITS,
             input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` pruned to ``rate`` (total / kept weights) by ``scheme`` in one exact projection and put on
    ``weight_bits`` levels, with no training: the explorer's "without retraining" model. Every layer the scheme can
    prune keeps the same fraction (``pruning.one_shot``); structured pruning removes whole channels where residual sums
    and batch norm join them. An N:M pattern as ``scheme`` ("2:4") keeps N of every M in each layer whose inputs split
    into groups of M (``rate`` is then ignored: the pattern's is M / N). ``study.price`` of the result is what it
    would weigh stored (an N:M model with ``scheme="nm"``, or read from its zeros)."""
    if scheme not in PRUNING_SCHEMES and not is_nm(scheme):
        raise ValueError(f"scheme={scheme!r}; choose one of {list(PRUNING_SCHEMES)} or an N:M pattern such as 2:4")
    shape = _checked(model, weight_bits, input_shape, None)
    if not rate >= 1:
        raise ValueError(f"rate={rate!r}: a pruning rate is total / kept weights, at least 1")
    compressed = copy.deepcopy(model)
    with _evaluating(compressed):
        pruning.one_shot(compressed, scheme, float(rate), shape)
    if weight_bits != FULL_PRECISION_BITS:
        quantize.snap_to_levels(compressed, weight_bits, keep_support=True)
    return compressed


def save(model: nn.Module, path: str | Path, *, weight_bits: int, input_shape: Sequence[int], scheme: str | None = None,
         index_bits: int | None = None, name: str | None = None, dataset: str = "") -> dict[str, Any]:
    """Write ``model`` as a study model file (``.stm``): every layer in the bit-exact stream ``price`` counts (its
    streams are the priced bits, rounded up to bytes), structured models compacted, the rest of the state as float32.
    The architecture is not stored: ``study.load(path, into=module)`` fills a module built as this one was (a ``name``
    of the study's registry at its input shape is stored as the study's own, which ``study.load(path)`` rebuilds).
    Returns the file's header. Scheme and snapping as in ``price``."""
    shape = _checked(model, weight_bits, input_shape, scheme)
    stored, scheme, _ = _on_levels(model, weight_bits, scheme)
    name = name or type(model).__name__
    # a model named as the study's registry names one, at its input shape, is saved as the study's own (loads alone)
    registered = models.INPUT_SHAPES.get(name) == shape
    with _evaluating(stored):
        return model_file.save(path, stored, model=name, dataset=dataset, scheme=scheme, weight_bits=weight_bits,
                               index_bits=index_bits, input_shape=None if registered else shape)
