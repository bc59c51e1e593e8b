"""Quantization of (pruned) models: per-layer scales, ADMM onto the levels, masked mapping, binarization.

For a pruned model only surviving weights are quantized: a pruned zero stays zero and a survivor
never falls to zero (``constraints.project_quantized`` with a mask), so quantization does not change
the pruning rate; its b-bit codes then name 2^b non-zero levels, +-1..+-2^(b-1). A dense model
(``keep_support=False``) may use 0 as a level (ternary at 2 bits).
The final snap is *masked mapping*: survivors are
put on their nearest level in growing fractions (those already closest to a level first); snapped
weights are frozen and the rest retrain to compensate, until every weight sits on a level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from study.compression import constraints, scale_fit
from study.compression.admm import ADMMConfig, MaskedRetraining, admm_phase
from study.core.data import Split
from study.progress import line, phase
from study.core.models import prunable_layers
from study.core.training import TrainConfig, evaluate, fit


def support_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The non-zero pattern of each prunable layer (what pruning left)."""
    return {n: (m.weight.detach() != 0).to(m.weight.dtype) for n, m in prunable_layers(model).items()}


def _allowed(support: Mapping[str, torch.Tensor], keep_support: bool) -> dict[str, torch.Tensor | None]:
    """Per layer: the mask survivors must stay inside, or None where 0 is an allowed level."""
    return {n: (m.bool() if keep_support else None) for n, m in support.items()}


def fit_alphas(model: nn.Module, bits: int, masks: Mapping[str, torch.Tensor | None]) -> dict[str, float]:
    """The least-squares scale of each layer ``masks`` names (every prunable layer when it names them all)."""
    layers = prunable_layers(model)
    return {n: scale_fit.fit_alpha(layers[n].weight, bits, mask) for n, mask in masks.items()}


def _level_projections(alphas: Mapping[str, float], bits: int, masks: Mapping[str, torch.Tensor | None]) -> dict[str, constraints.Projection]:
    return {n: (lambda w, a=a, m=masks[n]: constraints.project_quantized(w, a, bits, m)) for n, a in alphas.items()}


def admm_quantize(
    model: nn.Module,
    train: Split,
    val: Split,
    bits: int,
    admm_config: ADMMConfig,
    admm_train: TrainConfig,
    progress: bool = True,
    keep_support: bool = True,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """ADMM towards the b-bit levels of each layer's survivors (in place); return (alphas, history).

    With ``keep_support`` the pruning pattern is kept by masked training throughout (and survivors
    avoid 0); without it every weight trains and 0 is a level. The scales are fitted once at the start.
    """
    support = support_masks(model)
    masks = _allowed(support, keep_support)
    alphas = fit_alphas(model, bits, masks)
    keep_pruned = MaskedRetraining(model, support) if keep_support else None
    with phase(f"ADMM towards {bits}-bit levels"):
        admm = admm_phase(model, train, val, _level_projections(alphas, bits, masks), admm_config, admm_train,
                          (keep_pruned.step_hook,) if keep_pruned else (), progress)
    if keep_pruned:
        keep_pruned.remove()
    return alphas, admm.history


def masked_mapping(
    model: nn.Module,
    train: Split,
    val: Split,
    bits: int,
    alphas: Mapping[str, float],
    fractions: Sequence[float],
    retrain: TrainConfig,
    progress: bool = True,
    keep_support: bool = True,
) -> list[dict[str, float]]:
    """Snap survivors to their nearest level in growing fractions, retraining the unsnapped ones.

    ``fractions`` must increase and end at 1.0. Returns one row per round (fraction, val accuracy).
    ``keep_support=False``: every weight is a candidate and may snap to the level 0 (dense models).
    """
    if not fractions or list(fractions) != sorted(fractions) or fractions[-1] != 1.0 or fractions[0] <= 0:
        raise ValueError(f"masked mapping fractions {list(fractions)} must increase within (0, 1] and end at 1.0")
    support = support_masks(model)
    allowed = _allowed(support, keep_support)
    masks = support if keep_support else {n: torch.ones_like(m) for n, m in support.items()}
    layers = prunable_layers(model)
    snapped = {n: torch.zeros_like(m) for n, m in masks.items()}
    history = []
    for fraction in fractions:
        fixed = {}
        with torch.no_grad():
            for name, layer in layers.items():
                w, survivors = layer.weight, masks[name].bool()
                target, _ = constraints.project_quantized(w, alphas[name], bits, allowed[name])
                distance = (w - target).abs()
                distance[~survivors | snapped[name].bool()] = -1.0  # already snapped or pruned: not candidates
                n_snap = round(fraction * int(survivors.sum())) - int(snapped[name].sum())
                if n_snap > 0:
                    # stable sort: among equal distances the lower index snaps first (deterministic)
                    order = torch.sort(torch.where(distance < 0, torch.inf, distance).flatten(), stable=True).indices
                    snapped[name].view(-1)[order[:n_snap]] = 1.0
                fixed[name] = torch.where(snapped[name].bool(), target, torch.zeros_like(w))
                w.copy_(torch.where(snapped[name].bool(), target, w))
        trainable = {n: masks[n] * (1 - snapped[n]) for n in masks}
        if fraction < 1.0:
            frozen = MaskedRetraining(model, trainable, fixed)
            with phase(f"masked mapping, {fraction:.0%} snapped"):
                fit(model, train, val, retrain, step_hooks=[frozen.step_hook], progress=progress)
            frozen.remove()
        history.append({"fraction": fraction, "val_accuracy": evaluate(model, val)["accuracy"]})
        if progress:
            line(f"masked mapping: {fraction:.0%} of the weights on their levels", val_accuracy=history[-1]["val_accuracy"])
    return history


def snap_to_levels(model: nn.Module, bits: int, keep_support: bool = True,
                   layers: Sequence[str] | None = None) -> dict[str, float]:
    """Put every weight (a pruned model: every survivor) on its nearest b-bit level at once, in place, with
    each layer's least-squares scale; return the scales. Post-training quantization, with no training:
    at 8 bits it is usually as accurate as the model it starts from, and what trained quantization must beat.
    ``layers``: only these (the others are left as they are).
    """
    masks = {n: m for n, m in _allowed(support_masks(model), keep_support).items() if layers is None or n in layers}
    alphas = fit_alphas(model, bits, masks)
    modules = prunable_layers(model)
    with torch.no_grad():
        for name in alphas:
            modules[name].weight.copy_(constraints.project_quantized(modules[name].weight, alphas[name], bits, masks[name])[0])
    return alphas


def check_on_levels(model: nn.Module, bits: int, alphas: Mapping[str, float], keep_support: bool = True) -> None:
    """Raise if any non-zero weight is off its layer's levels (a guard before reporting b-bit results).

    ``keep_support``: the model's levels are a pruned model's (no 0, up to +-2^(b-1); see
    ``constraints.max_level``), else a dense model's.
    """
    m = constraints.max_level(bits, allow_zero=not keep_support)
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach()
        codes = w / alphas[name]
        nz = w != 0
        if not (torch.allclose(codes[nz], codes[nz].round(), atol=1e-4) and bool((codes[nz].abs() <= m + 1e-4).all())):
            raise AssertionError(f"layer {name}: weights are not all on the {bits}-bit levels")


def binarize(weight: torch.Tensor) -> torch.Tensor:
    """``alpha * sign(W)`` with ``alpha = mean |W|`` (the least-squares binary scale), sign(0) = +1."""
    return torch.where(weight < 0, -1.0, 1.0).to(weight.dtype) * weight.abs().mean()


class _BinarySTE(nn.Module):
    """Forward: ``binarize(W)``; backward: straight through to the latent W."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (binarize(weight) - weight).detach()


def binarize_with_ste(model: nn.Module, train: Split, val: Split, config: TrainConfig, progress: bool = True) -> list[dict]:
    """Train every layer's weights as binary (straight-through estimator), then bake the binary values in."""
    layers = prunable_layers(model)
    for layer in layers.values():
        parametrize.register_parametrization(layer, "weight", _BinarySTE())
    with phase("binarization (straight-through estimator)"):
        history = fit(model, train, val, config, progress=progress)
    for layer in layers.values():
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        with torch.no_grad():  # exact levels (w + (b - w) in floating point is only close to b)
            layer.weight.copy_(binarize(layer.weight))
    return history
