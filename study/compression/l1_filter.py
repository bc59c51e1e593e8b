"""A structured baseline nobody here wrote: L1-norm filter pruning with masked retraining (Li, Kadav, Durdanovic,
Samet, Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017), done with PyTorch's ``prune.ln_structured``.

Each step removes, layer by layer, the output filters (FC: output neurons) of smallest L1 norm until the layer
keeps the fraction the ADMM filter schedule gives it at that rate (the same ``density_weights`` split, so only
the choice of filters and the training differ), then retrains with the masks fixed for as many epochs as an
ADMM step spends on ADMM and retraining together. With it the structured side of the comparison, like the
irregular side (global magnitude pruning), is not ADMM's alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.nn.utils import prune

from study.compression import constraints, coupling, pruning
from study.core import models

METHOD = "L1-norm filter pruning (Li et al. 2017; torch.nn.utils.prune.ln_structured)"


def kept_rows(layer: nn.Module) -> int:
    """Output filters (GEMM rows) of ``layer`` not yet pruned by its mask (all of them before the first step)."""
    mask = getattr(layer, "weight_mask", None)
    if mask is None:
        return layer.weight.shape[0]
    return int((mask.flatten(1) != 0).any(dim=1).sum())


def prune_filters_to_rate(model: nn.Module, rate: float, density_weights: Mapping[str, float],
                          input_shape: tuple[int, ...]) -> dict[str, int]:
    """Prune whole filters of smallest L1 norm until each layer keeps the filter schedule's share at ``rate``
    (``pruning.split_rate``); masks compose with earlier steps, never un-pruning a filter. Returns the filters
    kept per layer. Networks whose channels residual sums or batch norm join are refused: removing one
    layer's filters there needs the coupled layers pruned alike, which ``ln_structured`` does not know."""
    if coupling.uses_spaces(model, "filter"):
        raise ValueError("L1 filter pruning runs on plain chains of convolutions and FC layers; this network joins "
                         "channels (residual sums or batch norm): leave it out of the l1filter stage")
    keep = pruning.step_keep(model, rate, "density", density_weights, scheme="filter", input_shape=input_shape)
    pruning.check_keep_fractions(model, "filter", keep)
    kept = {}
    for name, layer in models.prunable_layers(model).items():
        rows = layer.weight.shape[0]
        target = constraints.keep_count(rows, keep[name]) if keep[name] < 1.0 else rows
        now = kept_rows(layer)
        if now > target:
            # amount counts among the filters still unpruned: PyTorch composes the new mask with the old one
            prune.ln_structured(layer, "weight", amount=now - target, n=1, dim=0)
        kept[name] = min(now, target)
    return kept
