"""ADMM pruning schedules: per-layer targets, one ADMM phase plus masked retraining, progressive steps.

A *step* prunes to per-layer kept fractions: ADMM (W-step = SGD on loss + penalty, Z/U updates
during the epochs), a hard projection giving the masks, then masked retraining. Progressive pruning
runs a sequence of steps, each starting from the previous result: the calibration on LeNet-5 showed
that reaching ~200x in steps beats jumping there at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from study.compression import compaction, constraints, coupling, nm
from study.contract import ALLOCATIONS, is_nm, nm_pattern
from study.compression.admm import ADMMConfig, MaskedRetraining, admm_phase
from study.core.data import Split
from study.progress import phase
from study.core.models import prunable_layers
from study.core.training import TrainConfig, evaluate, fit


def layer_units(model: nn.Module, scheme: str) -> dict[str, int]:
    """How many units (weights, filters, channels, columns) each prunable layer has under ``scheme``."""
    return {n: constraints.group_count(m.weight, scheme) for n, m in prunable_layers(model).items()}


def check_keep_fractions(model: nn.Module, scheme: str, keep: Mapping[str, float]) -> None:
    """Refuse targets that name missing layers, lie outside (0, 1], or cannot be met by ``scheme``."""
    units = layer_units(model, scheme)
    unknown = sorted(set(keep) - set(units))
    if unknown:
        raise ValueError(f"kept fractions name layer(s) {unknown} that the model lacks; its layers: {list(units)}")
    for name, fraction in keep.items():
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"kept fraction of layer {name!r} is {fraction}; it must be in (0, 1]")
        if fraction < 1.0 and units[name] == 1:
            raise ValueError(
                f"{scheme} pruning of layer {name!r}: it has a single {scheme} unit, so its kept fraction must be 1.0"
            )


def split_rate(model: nn.Module, rate: float, density_weights: Mapping[str, float]) -> dict[str, float]:
    """Per-layer kept fractions reaching an overall weight pruning ``rate`` (total / non-zero).

    Layer l keeps the fraction ``min(1, c * density_weights[l])``, with the one ``c`` (found by
    bisection) that makes the kept weights total ``weights / rate``: a layer with twice the density
    weight keeps twice the fraction. Layers without a density weight are not pruned (fraction 1.0).
    """
    layers = prunable_layers(model)
    unknown = sorted(set(density_weights) - set(layers))
    if unknown:
        raise ValueError(f"density weights name layer(s) {unknown} that the model lacks; its layers: {list(layers)}")
    if any(not v > 0 for v in density_weights.values()):
        raise ValueError(f"density weights must be > 0, got {dict(density_weights)}")
    if not rate >= 1:
        raise ValueError(f"pruning rate {rate} must be >= 1")
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    dense = sum(sizes[n] for n in sizes if n not in density_weights)
    target = sum(sizes.values()) / rate - dense
    if target <= 0:
        raise ValueError(f"rate {rate} is out of reach: the unpruned layers alone keep {dense} of {sum(sizes.values())} weights")
    kept = lambda c: sum(min(1.0, c * w) * sizes[n] for n, w in density_weights.items())  # noqa: E731
    lo, hi = 0.0, 1.0 / min(density_weights.values())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kept(mid) < target else (lo, mid)
    return {n: (min(1.0, hi * density_weights[n]) if n in density_weights else 1.0) for n in sizes}


def magnitude_split(model: nn.Module, rate: float, layers: Sequence[str], min_keep: float = 0.0) -> dict[str, float]:
    """Per-layer kept fractions from one magnitude threshold shared by ``layers`` (irregular pruning).

    The budget ``weights / rate`` (less the weights of unlisted layers, which stay dense) goes to the
    largest-magnitude weights of the listed layers taken together, as a global top-k would; each
    layer keeps at least ``min_keep`` of its weights, so no layer is cut off entirely (a floor that
    binds lowers the overall rate a little below the target). Measured on the current weights, so
    the allocation follows what earlier steps and retraining left.
    """
    all_layers = prunable_layers(model)
    unknown = sorted(set(layers) - set(all_layers))
    if unknown:
        raise ValueError(f"magnitude split names layer(s) {unknown} that the model lacks; its layers: {list(all_layers)}")
    if not rate >= 1:
        raise ValueError(f"pruning rate {rate} must be >= 1")
    if not 0.0 <= min_keep <= 1.0:
        raise ValueError(f"min_keep={min_keep} must be in [0, 1]")
    sizes = {n: m.weight.numel() for n, m in all_layers.items()}
    dense = sum(size for n, size in sizes.items() if n not in layers)
    budget = int(sum(sizes.values()) / rate) - dense
    if budget <= 0:
        raise ValueError(f"rate {rate} is out of reach: the unpruned layers alone keep {dense} of {sum(sizes.values())} weights")
    magnitudes = torch.cat([all_layers[n].weight.detach().abs().flatten() for n in layers])
    chosen = torch.zeros_like(magnitudes, dtype=torch.bool)
    chosen[constraints.top_indices(magnitudes, min(budget, magnitudes.numel()))] = True
    counts = torch.split(chosen, [sizes[n] for n in layers])
    keep = {n: 1.0 for n in sizes}
    for name, taken in zip(layers, counts):
        keep[name] = min(1.0, max(int(taken.sum()) / sizes[name], min_keep, 1.0 / sizes[name]))
    return keep




def step_keep(model: nn.Module, rate: float, allocation: str, density_weights: Mapping[str, float],
              min_keep: float = 0.0, scheme: str = "irregular", input_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """Per-layer kept fractions of the step that prunes ``model`` to ``rate`` (params.yaml ``allocation``).

    Where ``scheme`` prunes channel spaces (residual sums, batch norm), the density weight given to a
    space's first member applies to all its members, so they keep the same fraction and the rate counts them all.
    """
    density_weights = expand_density_weights(model, scheme, density_weights, input_shape)
    if allocation == "magnitude":
        return magnitude_split(model, rate, list(density_weights), min_keep)
    if allocation == "density":
        if coupling.uses_spaces(model, scheme):
            density_weights = space_density_weights(model, scheme, density_weights, _required(input_shape))
        return split_rate(model, rate, density_weights)
    raise ValueError(f"allocation={allocation!r}; valid: {list(ALLOCATIONS)}")


ALL_LAYERS = "*"


def nm_keep(model: nn.Module, pattern: str, density_weights: Mapping[str, float]) -> dict[str, float]:
    """The layers an N:M step prunes, each to N / M: those ``density_weights`` names (``"*"``: every one) whose
    reduction length splits into groups of M; the others stay dense (as sparse hardware leaves them)."""
    n, m = nm_pattern(pattern)
    layers = prunable_layers(model)
    unknown = [name for name in density_weights if name != ALL_LAYERS and name not in layers]
    if unknown:
        raise ValueError(f"density weights name layers {unknown} that {type(model).__name__} lacks; its layers: {list(layers)}")
    named = list(layers) if ALL_LAYERS in density_weights else list(density_weights)
    return {name: n / m for name in named if nm.applies(layers[name].weight, m)}


def expand_density_weights(model: nn.Module, scheme: str, density_weights: Mapping[str, float],
                           input_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """Density weights with ``"*"`` replaced by every layer ``scheme`` can prune, each with the ``"*"`` weight
    (layers named as well keep their own): a 54-layer ResNet-50 needs no list of names.

    Every layer for irregular and column pruning; for filter and channel pruning, the first member of each
    channel space that can go (so not the class scores' layer, nor the layer reading the image)."""
    if ALL_LAYERS not in density_weights:
        return dict(density_weights)
    named = {k: v for k, v in density_weights.items() if k != ALL_LAYERS}
    if scheme in ("filter", "channel"):
        candidates = [names[0] for _, names in _spaces_by_member(model, scheme, _required(input_shape))]
    else:
        candidates = [name for name, units in layer_units(model, scheme).items() if units > 1]
    return {**{name: density_weights[ALL_LAYERS] for name in candidates}, **named}


def _required(input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_shape is None:
        raise ValueError("pruning channels that residual sums or batch norm join needs the model's input shape")
    return input_shape


def _spaces_by_member(model: nn.Module, scheme: str, input_shape: tuple[int, ...]) -> list[tuple[coupling.ChannelSpace, list[str]]]:
    return [(space, coupling.members(space, scheme)) for space in coupling.prunable_spaces(model, input_shape)
            if coupling.members(space, scheme)]


def space_density_weights(model: nn.Module, scheme: str, density_weights: Mapping[str, float],
                          input_shape: tuple[int, ...]) -> dict[str, float]:
    """Density weights given to a space's first member (the name params.yaml uses) spread over all its members."""
    spread: dict[str, float] = {}
    placed: set[str] = set()
    for _, names in _spaces_by_member(model, scheme, input_shape):
        named = [n for n in names if n in density_weights]
        if not named:
            continue
        if named != names[:1]:
            raise ValueError(f"{scheme} pruning: layers {names} share their channels (a residual sum or batch norm joins "
                             f"them) and are pruned together; give the density weight to {names[0]!r} only, not {named}")
        spread.update({n: density_weights[names[0]] for n in names})
        placed.add(names[0])
    stray = sorted(set(density_weights) - placed)
    if stray:
        raise ValueError(f"{scheme} pruning cannot remove the channels of {stray}: they are the network's input or output, "
                         "or pass an operation the channel tracer does not know; remove them from density_weights")
    return spread


def space_projections(model: nn.Module, scheme: str, keep: Mapping[str, float], input_shape: tuple[int, ...]
                      ) -> list[tuple[coupling.ChannelSpace, list[str], coupling.JointProjection]]:
    """One joint projection per channel space whose members keep less than all: (space, members, projection)."""
    result = []
    for space, names in _spaces_by_member(model, scheme, input_shape):
        fractions = {keep.get(n, 1.0) for n in names}
        if len(fractions) > 1:
            raise ValueError(f"{scheme} pruning: {names} share their channels but were given kept fractions {sorted(fractions)}")
        fraction = fractions.pop()
        if fraction < 1.0:
            result.append((space, names, coupling.space_projection(space, scheme, constraints.keep_count(space.channels, fraction))))
    return result


def _space_norm_masks(model: nn.Module, spaces: Sequence[coupling.ChannelSpace], masks: Mapping[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """Masks that hold a removed filter's bias and its batch norm's scale and shift at zero, so the channel is
    exactly zero wherever it flows and compaction can take it out."""
    layers = dict(model.named_modules())
    result = {}
    for space in spaces:
        lead = masks[space.producers[0]]
        alive = coupling.kept_channels(lead).to(lead.dtype)
        for name in space.norms:
            result[f"{name}.weight"] = result[f"{name}.bias"] = alive
        for name in space.producers:
            if layers[name].bias is not None:
                result[f"{name}.bias"] = alive
    return result


def projections_for(model: nn.Module, scheme: str, keep: Mapping[str, float]) -> dict[str, constraints.Projection]:
    """Exact projections onto each layer's set; layers kept whole (fraction 1.0) are left unconstrained."""
    check_keep_fractions(model, scheme, keep)
    units = layer_units(model, scheme)
    result = {}
    for name, fraction in keep.items():
        if fraction < 1.0:
            k = constraints.keep_count(units[name], fraction)
            result[name] = lambda w, k=k: constraints.project_pruned(w, scheme, k)
    return result


def kept_fractions(model: nn.Module) -> dict[str, float]:
    """Non-zero fraction of each layer's weights, as measured on the model."""
    return {n: float(torch.count_nonzero(m.weight)) / m.weight.numel() for n, m in prunable_layers(model).items()}


@dataclass(frozen=True)
class StepResult:
    keep: dict[str, float]
    masks: dict[str, torch.Tensor] = field(repr=False)
    admm_history: list[dict[str, float]] = field(repr=False)
    retrain_history: list[dict[str, Any]] = field(repr=False)
    val_accuracy: float = 0.0


def prune_step(
    model: nn.Module,
    train: Split,
    val: Split,
    scheme: str,
    keep: Mapping[str, float],
    admm_config: ADMMConfig,
    admm_train: TrainConfig,
    retrain: TrainConfig,
    masks: Mapping[str, torch.Tensor] | None = None,
    progress: bool = True,
    drop_dead: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> StepResult:
    """One ADMM phase then masked retraining, in place. ``masks`` of an earlier step stay enforced.

    An earlier step's zeros stay zero throughout (so progressive pruning only ever removes more).
    ``drop_dead``: after the hard projection, also prune the survivors that cannot change the output
    (``compaction.zero_dead_weights``), so retraining and the reported rate see only live weights.
    Filter and channel pruning of a network whose channels residual sums or batch norm join project each
    channel space as a whole (``coupling``); a removed filter's bias and batch norm entries are held at zero.
    """
    input_shape = input_shape or input_shape_of(train)
    projections, joint, spaces = constraint_sets(model, scheme, keep, input_shape, masks)
    earlier = MaskedRetraining(model, masks) if masks else None
    with phase("ADMM"):
        admm = admm_phase(model, train, val, projections, admm_config, admm_train,
                          (earlier.step_hook,) if earlier else (), progress, joint=joint)
    if earlier:
        earlier.remove()
    all_masks = dict(masks or {})
    new_masks = admm.hard_project(model)
    if scheme == "filter":
        new_masks |= _space_norm_masks(model, spaces, new_masks)
    for name, mask in new_masks.items():
        all_masks[name] = mask * all_masks[name] if name in all_masks else mask
    if drop_dead:
        for name, zeroed in compaction.zero_dead_weights(model, input_shape).items():
            if zeroed.any():
                alive = (~zeroed).to(zeroed.device, torch.float32)
                all_masks[name] = all_masks[name] * alive if name in all_masks else alive
    masked = MaskedRetraining(model, all_masks)
    with phase("masked retraining"):
        retrain_history = fit(model, train, val, retrain, step_hooks=[masked.step_hook], progress=progress)
    masked.remove()
    return StepResult(
        keep=dict(keep),
        masks=all_masks,
        admm_history=admm.history,
        retrain_history=retrain_history,
        val_accuracy=evaluate(model, val)["accuracy"],
    )


Joint = tuple[Sequence[str], coupling.JointProjection]


def constraint_sets(model: nn.Module, scheme: str, keep: Mapping[str, float], input_shape: tuple[int, ...],
                    masks: Mapping[str, torch.Tensor] | None = None
                    ) -> tuple[dict[str, constraints.Projection], list[Joint], list[coupling.ChannelSpace]]:
    """The exact projections of one step: per layer, or one per channel space where residual sums or batch norm join
    channels; ``masks`` of an earlier step are applied first, so its zeros stay zero. Returns (per-layer projections,
    joint projections with their layers, the channel spaces projected)."""
    earlier_mask = (lambda n, w: w * masks[n] if n in masks else w) if masks else (lambda n, w: w)  # noqa: E731
    if is_nm(scheme):  # an N:M step: each named layer onto "at most N of every M", exactly (study.compression.nm)
        return {name: (lambda w, name=name: nm.project(earlier_mask(name, w), scheme)) for name in keep}, [], []
    if coupling.uses_spaces(model, scheme):
        found = space_projections(model, scheme, keep, input_shape)
        joint: list[Joint] = [(names, lambda ws, p=p: p({n: earlier_mask(n, w) for n, w in ws.items()}))
                              for _, names, p in found]
        return {}, joint, [space for space, _, _ in found]
    projections = {n: (lambda w, p=p, n=n: p(earlier_mask(n, w))) for n, p in projections_for(model, scheme, keep).items()}
    return projections, [], []


@torch.no_grad()
def one_shot(model: nn.Module, scheme: str, rate: float, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``rate`` (total / kept weights) in one projection, no training: every layer the
    scheme can prune keeps the same fraction (``step_keep``'s density split with equal weights), each onto its set
    exactly as ADMM's last projection puts it; a removed filter's bias and batch norm go to zero with it, so its
    channel is exactly zero downstream and compaction can take it out. An N:M pattern as ``scheme`` ("2:4") prunes
    every layer whose inputs split into groups of M to it (``nm_keep``; ``rate`` is the pattern's). Returns the 0/1
    masks by parameter name."""
    keep = (nm_keep(model, scheme, {ALL_LAYERS: 1.0}) if is_nm(scheme) else
            step_keep(model, rate, "density", {ALL_LAYERS: 1.0}, scheme=scheme, input_shape=input_shape))
    projections, joint, spaces = constraint_sets(model, scheme, keep, input_shape)
    layers = prunable_layers(model)
    projected = {n: project(layers[n].weight) for n, project in projections.items()}
    for names, project in joint:
        projected.update(project({n: layers[n].weight for n in names}))
    masks = {}
    for name, (weight, mask) in projected.items():
        layers[name].weight.copy_(weight)
        masks[name] = mask.to(weight.dtype)
    if scheme == "filter":
        parameters = dict(model.named_parameters())
        for name, alive in _space_norm_masks(model, spaces, masks).items():
            parameters[name].mul_(alive)
            masks[name] = alive
    return masks


def input_shape_of(split: Split) -> tuple[int, ...]:
    """(channels, height, width) of a split's images, from its first one."""
    images, _ = next(iter(split.batches(1)))
    return tuple(images.shape[1:])
