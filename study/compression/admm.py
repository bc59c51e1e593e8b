"""ADMM for ``min f(W) s.t. W_i in S_i`` (ADMM-NN-S), plus the masks of masked retraining.

Splitting ``W_i = Z_i`` gives the augmented Lagrangian ``f(W) + sum_i rho/2 ||W_i - Z_i + U_i||^2``
(scaled dual ``U``). One round: the W-step is ordinary SGD on that loss (``penalty`` is added to the
loss by ``training.fit``), and every ``update_every`` optimizer steps (``step_hook``):

    Z_i = Proj_{S_i}(W_i + U_i)      exact Euclidean projection (study.compression.constraints)
    U_i = U_i + W_i - Z_i

Dynamic regularization: rho grows by ``rho_growth`` at every Z/U update up to ``rho_max``. With a
scaled dual, changing rho must rescale U by old/new rho to keep the unscaled dual ``rho U`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from study.core import execution
from study.core.data import Split
from study.core.models import prunable_layers
from study.core.training import StepHook, TrainConfig, evaluate, fit

# A projection returns (projected weight, 0/1 mask of the support the constraint allows).
Projection = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ADMMConfig:
    rho: float = 1e-2  # initial penalty; ~1e-2 calibrated for LeNet-5 (EXPERIMENTS.md)
    rho_growth: float = 1.5  # multiply rho at every Z/U update (dynamic regularization)
    rho_max: float = 1.0  # cap: past it the penalty only fights the loss
    updates_per_epoch: int = 2  # Z/U updates per epoch of the W-step

    def __post_init__(self) -> None:
        if not self.rho > 0 or not self.rho_max >= self.rho:
            raise ValueError(f"need 0 < rho ({self.rho}) <= rho_max ({self.rho_max})")
        if not self.rho_growth >= 1:
            raise ValueError(f"rho_growth={self.rho_growth} must be >= 1")
        if self.updates_per_epoch < 1:
            raise ValueError(f"updates_per_epoch={self.updates_per_epoch} must be >= 1")


def _weights(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The weight of each named prunable layer; a name that is no layer may name any parameter (a batch
    norm's scale held at zero with the channel it belongs to)."""
    layers = prunable_layers(model)
    parameters = dict(model.named_parameters())
    missing = sorted(n for n in names if n not in layers and n not in parameters)
    if missing:
        raise ValueError(f"model has no prunable layer(s) or parameter(s) {missing}; its layers: {list(layers)}")
    return {name: layers[name].weight if name in layers else parameters[name] for name in names}


JointProjection = Callable[[Mapping[str, torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor]]]


class ADMM:
    """ADMM state (Z, U, rho) for the constrained layers of one model, and its update history."""

    def __init__(
        self,
        model: nn.Module,
        projections: Mapping[str, Projection],
        config: ADMMConfig,
        steps_per_epoch: int,
        monitor: Callable[[], dict[str, float]] | None = None,
        joint: Sequence[tuple[Sequence[str], JointProjection]] = (),
    ) -> None:
        self.projections = dict(projections)
        # constraints over several layers at once (channels a residual sum joins): one projection for all
        self.joint = [(tuple(names), project) for names, project in joint]
        self.names = [*self.projections, *(n for names, _ in self.joint for n in names)]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"a layer is constrained twice: {self.names}")
        self.config = config
        self.rho = config.rho
        self.update_every = max(1, steps_per_epoch // config.updates_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.monitor = monitor
        self.steps = 0
        self.history: list[dict[str, float]] = []
        weights = _weights(model, self.names)
        with torch.no_grad():
            projected = self.project({n: w.detach() for n, w in weights.items()})
            self.Z = {n: projected[n][0].clone() for n in weights}
            self.U = {n: torch.zeros_like(w) for n, w in weights.items()}
        execution.current().broadcast_(list(self.Z.values()))

    def project(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every constrained tensor onto its set: (projected, 0/1 mask of the support) by name."""
        result = {name: self.projections[name](tensors[name]) for name in self.projections}
        for names, project in self.joint:
            result.update(project({name: tensors[name] for name in names}))
        return result

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum_i rho/2 ||W_i - Z_i + U_i||^2``: added to the loss during the W-step."""
        weights = _weights(model, self.names)
        total = sum(((w - self.Z[n] + self.U[n]).pow(2).sum() for n, w in weights.items()), torch.zeros(()))
        return 0.5 * self.rho * total

    def step_hook(self, model: nn.Module) -> None:
        """Called after every optimizer step; runs the Z/U update every ``update_every`` steps."""
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.update(model)

    @torch.no_grad()
    def update(self, model: nn.Module) -> dict[str, float]:
        weights = _weights(model, self.names)
        row: dict[str, float] = {"update": len(self.history) + 1, "epoch": self.steps / self.steps_per_epoch, "rho": self.rho}
        distance_sq, norm_sq = 0.0, 0.0
        run = execution.current()
        # rank 0 computes Z and U, the others receive them: one state even if a projection broke ties
        # differently elsewhere (with one process this is the plain update)
        projected = self.project({n: w + self.U[n] for n, w in weights.items()}) if run.is_main else {}
        for name, w in weights.items():
            if run.is_main:
                self.Z[name] = projected[name][0]
                self.U[name] += w - self.Z[name]
            run.broadcast_([self.Z[name], self.U[name]])
            d = float((w - self.Z[name]).pow(2).sum())
            row[f"w_minus_z/{name}"] = d**0.5
            distance_sq += d
            norm_sq += float(w.pow(2).sum())
        row["w_minus_z"] = distance_sq**0.5
        row["w_minus_z_relative"] = (distance_sq / norm_sq) ** 0.5 if norm_sq else 0.0
        if self.monitor is not None:
            row.update(self.monitor())
        self.history.append(row)
        new_rho = min(self.rho * self.config.rho_growth, self.config.rho_max)
        for name in self.U:
            self.U[name] *= self.rho / new_rho
        self.rho = new_rho
        return row

    @torch.no_grad()
    def hard_project(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Put every constrained weight onto its set; return the masks for masked retraining."""
        masks = {}
        run = execution.current()
        weights = _weights(model, self.names)
        projected = self.project(weights)
        for name, w in weights.items():
            result, mask = projected[name]
            mask = mask.to(w.dtype)
            run.broadcast_([result, mask])  # rank 0's projection on every rank
            w.copy_(result)
            masks[name] = mask
        return masks


class MaskedRetraining:
    """Keeps pruned (or frozen) weights exactly at their value while the rest trains.

    ``masks[name]`` is 1 where a weight may train. Gradients are masked by a tensor hook, so SGD
    momentum and weight decay never move a masked weight, and ``step_hook`` re-imposes the values
    after each step as a guard. ``fixed`` holds the values masked weights keep (zeros by default).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor], fixed: Mapping[str, torch.Tensor] | None = None) -> None:
        weights = _weights(model, masks)
        self.masks = {n: m.detach().to(weights[n].dtype) for n, m in masks.items()}
        self.fixed = {n: (fixed[n].detach() if fixed and n in fixed else torch.zeros_like(w)) for n, w in weights.items()}
        self.handles = [w.register_hook(lambda grad, m=self.masks[n]: grad * m) for n, w in weights.items()]
        self.step_hook(model)

    @torch.no_grad()
    def step_hook(self, model: nn.Module) -> None:
        for name, w in _weights(model, self.masks).items():
            m = self.masks[name]
            w.copy_(w * m + self.fixed[name] * (1 - m))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def admm_phase(
    model: nn.Module,
    train: Split,
    val: Split,
    projections: Mapping[str, Projection],
    config: ADMMConfig,
    train_config: TrainConfig,
    step_hooks: tuple[StepHook, ...] = (),
    progress: bool = True,
    joint: Sequence[tuple[Sequence[str], JointProjection]] = (),
) -> ADMM:
    """The W-step epochs of ADMM (loss + penalty) with periodic Z/U updates, in place.

    ``step_hooks`` (e.g. keeping earlier masks) run after each optimizer step and before the Z/U
    update; validation accuracy and loss are recorded at every update.
    """
    steps_per_epoch = -(-len(train) // train_config.batch_size)
    admm = ADMM(model, projections, config, steps_per_epoch,
                monitor=lambda: {f"val_{k}": v for k, v in evaluate(model, val).items()}, joint=joint)
    fit(model, train, val, train_config, step_hooks=[*step_hooks, admm.step_hook], loss_terms=[admm.penalty],
        progress=progress)
    return admm
