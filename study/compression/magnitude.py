"""A baseline nobody here wrote: iterative global magnitude pruning with masked retraining (Han et al.,
"Learning both weights and connections", NeurIPS 2015), done with PyTorch's own ``torch.nn.utils.prune``.

It runs at the rates and with the epoch budget of the irregular ADMM schedule (each step retrains as many
epochs as ADMM and its retraining spend together), so the report can show what ADMM adds over the
simplest method at equal cost. The masks live in ``torch.nn.utils.prune``'s parametrization (``weight =
weight_orig * weight_mask``) while the steps run; a checkpoint holds the plain pruned weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from study.compression.pruning import kept_fractions
from study.contract import paired_counts, step_clearly_outside, step_within_tolerance
from study.core import models, training
from study.core.data import Split
from study.core.training import TrainConfig
from study.progress import line, phase


def prune_globally_to_rate(model: nn.Module, rate: float) -> int:
    """Prune the smallest-magnitude weights over all conv and FC layers together until the model keeps
    ``total / rate`` of them (never un-pruning one); return how many it keeps. Masks compose with earlier steps."""
    if not rate >= 1:
        raise ValueError(f"pruning rate {rate} must be >= 1 (total / kept weights)")
    layers = list(models.prunable_layers(model).values())
    total = sum(m.weight.numel() for m in layers)
    kept_now = sum(int(torch.count_nonzero(getattr(m, "weight_mask", torch.ones_like(m.weight)))) for m in layers)
    target = max(1, min(kept_now, round(total / rate)))
    if kept_now > target:
        # amount counts among the weights still unpruned: PyTorch composes the new mask with the old one
        prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured,
                                  amount=kept_now - target)
    return target


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy with the masks folded into the weights (``prune.remove``), as every stage stores models."""
    # The masked ``weight`` is a computed tensor that deepcopy refuses; it is recomputed from weight_orig
    # and weight_mask, so it is set aside during the copy (prune.remove does not need it).
    pruned = [layer for layer in models.prunable_layers(model).values() if prune.is_pruned(layer)]
    computed = {layer: layer.__dict__.pop("weight") for layer in pruned if "weight" in layer.__dict__}
    try:
        plain = copy.deepcopy(model)
    finally:
        for layer, weight in computed.items():
            layer.weight = weight
    for layer in models.prunable_layers(plain).values():
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
    return plain


@dataclass
class MagnitudeRun:
    steps: list[dict[str, Any]] = field(default_factory=list)


def run_schedule(model: nn.Module, splits: Mapping[str, Split], rates: list[float], retrain: TrainConfig,
                 reference_hits: np.ndarray, tolerance_pp: float, stop_after_misses: int,
                 save_step: Callable[[int, float, nn.Module], str],
                 progress: bool = True, prune_to: Callable[[nn.Module, float], object] = prune_globally_to_rate,
                 stop_tolerance_pp: float | None = None) -> MagnitudeRun:
    """Prune ``model`` (in place) to each rate in turn, retraining with the masks fixed; stop after
    ``stop_after_misses`` steps in a row clearly outside ``stop_tolerance_pp`` (default: ``tolerance_pp``; paired
    against the dense model's per-image validation ``reference_hits``), as the ADMM schedule does.

    ``prune_to(model, rate)`` adds the step's masks through ``torch.nn.utils.prune`` (global magnitude pruning
    by default; ``study.compression.l1_filter`` passes whole-filter pruning)."""
    training.seed_everything(retrain.seed)
    run, misses = MagnitudeRun(), 0
    stop_at = tolerance_pp if stop_tolerance_pp is None else stop_tolerance_pp
    for index, rate in enumerate(rates):
        with phase(f"step {index + 1}/{len(rates)} at {rate:g}x"):
            prune_to(model, rate)
            training.fit(model, splits["train"], splits["val"], retrain, progress=progress)
        plain = plain_copy(model)
        hits = training.correct_predictions(plain, splits["val"])  # the batches of evaluate: the same accuracy
        val = float(hits.mean())
        step = {"step": index + 1, "target_rate": rate, "pruning_rate": models.pruning_rate(plain),
                "val_accuracy": val, **paired_counts(reference_hits, hits),
                "test_accuracy": training.evaluate(plain, splits["test"])["accuracy"],
                "per_layer": kept_fractions(plain),
                "checkpoint": save_step(index + 1, rate, plain)}
        run.steps.append(step)
        misses = misses + 1 if step_clearly_outside(step, stop_at) else 0
        line(f"step {index + 1} done", rate=round(step["pruning_rate"], 1), val_accuracy=val,
             test_accuracy=step["test_accuracy"], within_tolerance=step_within_tolerance(step, tolerance_pp))
        if misses >= stop_after_misses:
            line(f"stopping: {misses} step(s) in a row clearly outside the tolerance")
            break
    return run
