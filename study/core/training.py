"""Seeded training and evaluation with per-epoch checkpoints that a rerun resumes from.

Kept free of pruning logic: ADMM and masked retraining hook in through ``step_hooks`` (called after
every optimizer step) and ``loss_terms`` (extra differentiable terms added to the loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from study.core import augment, execution
from study.core.augment import AUGMENTATIONS
from study.progress import line
from study.core.artifacts import CheckpointError, differing_keys, load_checkpoint, load_state_into, save_checkpoint
from study.core.data import Split

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Plain SGD with momentum; values documented in params.yaml where they are chosen."""

    epochs: int
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    seed: int = 0
    augment: str = "none"  # hflip: mirror left-right with probability 1/2; crop_flip: pad-and-crop, then hflip

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs={self.epochs} must be >= 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; valid: {list(LR_SCHEDULES)}")
        augment.check(self.augment)


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (weight initialization) and ask torch for deterministic kernels.

    Batch order has its own generator inside ``fit``, seeded from ``TrainConfig.seed``.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


@contextmanager
def channels_last(model: nn.Module) -> Iterator[None]:
    """Run the block with the model's convolution weights (and, through :func:`_on_device`, its image
    batches) in channels-last memory format, then put them back in PyTorch's default layout.

    Why: on the CPU oneDNN's channels-last kernels make a training step of the study's networks ~1.4x
    faster, most of it in max pooling, which is slow in the default NCHW layout (``benchmarks/memory_format.py``).
    Only the layout changes, not a value's logical position, so reshapes, masks and checkpoints outside the
    block see the usual tensors; float sums inside may round differently in the last bits. The parameters
    stay the same objects (``Module.to`` replaces their data), so an optimizer made before still holds them.
    Nested blocks (an evaluation inside ``fit``) leave the layout to the outermost one.

    Only where it was measured and is safe: on the CPU, for networks whose convolutions all have stride 1
    (LeNet-5, VGG-6). In torch 2.14.1 the CPU backward of a strided 1x1 convolution in channels-last layout
    crashes the process (``Conv2d(4, 8, 1, stride=2)`` on a 32x4x224x224 batch: segmentation fault), as in
    ResNets' downsampling shortcuts; GPUs are left in the default layout, untested here.
    """
    if getattr(model, "_in_channels_last", False) or not _gains_from_channels_last(model):
        yield
        return
    model.to(memory_format=torch.channels_last)
    model._in_channels_last = True
    try:
        yield
    finally:
        model._in_channels_last = False
        model.to(memory_format=torch.contiguous_format)
        _recompute_pruned_weights(model)


def _gains_from_channels_last(model: nn.Module) -> bool:
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return (bool(convolutions) and all(m.stride == (1, 1) for m in convolutions)
            and execution.model_device(model).type == "cpu")


def _recompute_pruned_weights(model: nn.Module) -> None:
    """``torch.nn.utils.prune`` keeps a layer's masked weight as a plain attribute, recomputed at each
    forward; ``Module.to`` converts only parameters and buffers, so recompute it in the restored layout."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def _on_device(x: torch.Tensor, model: nn.Module, device: torch.device) -> torch.Tensor:
    """A batch on the model's device, in channels-last layout while the model is (see :func:`channels_last`)."""
    if x.dim() == 4 and getattr(model, "_in_channels_last", False):
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)


def _scored_batches(model: nn.Module, split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits, labels) of a split's batches in order, on the model's device, in eval mode."""
    run = execution.current()
    device = execution.model_device(model)
    with channels_last(model):
        for x, y in split.batches(batch_size):
            x, y = _on_device(x, model, device), y.to(device, non_blocking=True)
            with run.autocast():
                logits = model(x)
            yield logits.float(), y  # the same tensor in float32 runs


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> dict[str, float]:
    """Accuracy (fraction) and mean cross-entropy on a whole split (shared out over the ranks of a
    distributed run, each evaluating its contiguous part)."""
    run = execution.current()
    part = split.shard(run.rank, run.world_size) if run.distributed else split
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for logits, y in _scored_batches(model, part, batch_size):
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train(was_training)
    if run.distributed:
        total_correct, loss_sum = run.sum_over_ranks([correct, loss_sum])
        correct = round(total_correct)
    n = max(len(split), 1)
    return {"accuracy": correct / n, "loss": loss_sum / n}


@torch.no_grad()
def correct_predictions(model: nn.Module, split: Split, batch_size: int = 1000) -> np.ndarray:
    """Per example (one process): is the top class the label? The batches of :func:`evaluate`, so the
    accuracy equals the one it reports."""
    was_training = model.training
    model.eval()
    hits = [(logits.argmax(dim=1) == y).cpu().numpy() for logits, y in _scored_batches(model, split, batch_size)]
    model.train(was_training)
    return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)


def _lr_at(config: TrainConfig, epoch: int) -> float:
    if config.lr_schedule == "constant" or config.epochs <= 1:
        return config.lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs))


StepHook = Callable[[nn.Module], None]
LossTerm = Callable[[nn.Module], torch.Tensor]


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    config: TrainConfig,
    resume_path: Path | str | None = None,
    step_hooks: Sequence[StepHook] = (),
    loss_terms: Sequence[LossTerm] = (),
    progress: bool = True,
    resume_key: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place; return the per-epoch history (train loss, val accuracy/loss, lr, seconds).

    With ``resume_path``, the full training state (weights, optimizer, RNG, history) is saved there
    atomically after every epoch, and a rerun with the same config and ``resume_key`` (what else shapes the
    result: data, runtime settings) continues after the last finished epoch; a resume file written under other
    settings is set aside with a line saying what differs, and training starts over.

    Batches go to the model's device. In a distributed run every rank draws the same global batch
    (same seeded generator) and trains on its part through DistributedDataParallel; the loss is scaled
    so that the averaged gradient is the one-process gradient of the whole batch, so ``batch_size``
    means the same with any number of processes.
    """
    run = execution.current()
    device = execution.model_device(model)
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    history: list[dict[str, Any]] = []
    start_epoch = 0
    key = {"config": asdict(config), **dict(resume_key or {})}
    state = load_checkpoint(resume_path) if resume_path is not None and Path(resume_path).exists() else None
    if state is not None and state.get("key") != key:
        written = state.get("key") or {"config": state.get("config")}  # files from before the key: their config
        line(f"{resume_path} was written under other settings ({', '.join(differing_keys(written, key))} differ): starting over")
        state = None
    if state is not None:
        load_state_into(model, state["model_state"], str(resume_path))
        optimizer.load_state_dict(state["optimizer_state"])
        generator.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng_state"])
        history = list(state["history"])
        start_epoch = len(history)
        line(f"resuming from {resume_path}: {start_epoch}/{config.epochs} epochs already done")

    model.train()
    with channels_last(model):
        _epochs(model, train, val, config, optimizer, generator, history, start_epoch, resume_path, step_hooks,
                loss_terms, progress, key)
    return history


def _epochs(model: nn.Module, train: Split, val: Split, config: TrainConfig, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, history: list[dict[str, Any]], start_epoch: int, resume_path: Path | str | None,
            step_hooks: Sequence[StepHook], loss_terms: Sequence[LossTerm], progress: bool, key: Mapping[str, Any]) -> None:
    """The epochs of :func:`fit` from ``start_epoch`` on, appending to ``history``."""
    run = execution.current()
    device = execution.model_device(model)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        lr = _lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, seen = 0.0, 0
        net = run.wrap(model)  # DistributedDataParallel in a distributed run, else the model itself
        for x, y, batch_size in train.training_batches(config.batch_size, generator, config.augment, run.rank, run.world_size):
            x, y = _on_device(x, model, device), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with run.autocast():
                logits = net(x)
            if run.distributed:
                # DDP averages the ranks' gradients: each rank's sum over the whole batch's size, times the
                # number of ranks, averages to the gradient of the mean over the whole batch
                loss = F.cross_entropy(logits.float(), y, reduction="sum") * (run.world_size / batch_size)
                batch_loss_sum = loss.item() * batch_size / run.world_size
            else:
                loss = F.cross_entropy(logits.float(), y)
                batch_loss_sum = loss.item() * len(y)
            total = loss + sum((term(model) for term in loss_terms), torch.zeros((), device=device))
            total.backward()
            optimizer.step()
            for hook in step_hooks:
                hook(model)
            loss_sum += batch_loss_sum
            seen += len(y)
        del net  # a DistributedDataParallel wrapper holds gradient hooks: the next phase makes its own
        loss_sum, seen = run.sum_over_ranks([loss_sum, seen])
        val_metrics = evaluate(model, val)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "val_accuracy": val_metrics["accuracy"],
            "val_loss": val_metrics["loss"],
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if progress:
            line(f"epoch {epoch + 1}/{config.epochs}", loss=record["train_loss"], val_accuracy=record["val_accuracy"],
                 lr=lr, seconds=round(record["seconds"], 1))
        if resume_path is not None:
            save_checkpoint(
                resume_path,
                {
                    "key": key,
                    "config": asdict(config),
                    "model_state": model.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "generator_state": generator.get_state(),
                    "torch_rng_state": torch.get_rng_state(),
                    "history": history,
                },
            )


def save_model(path: Path | str, model: nn.Module, model_name: str, dataset: str, extra: dict[str, Any] | None = None) -> None:
    """A model checkpoint: its registry name and dataset (checked on load) plus the weights."""
    save_checkpoint(path, {"model": model_name, "dataset": dataset, "state_dict": model.state_dict(), **(extra or {})})


def load_model(path: Path | str, model_name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a registered model from a checkpoint; refuse one written for a different model."""
    from study.core.models import build_model

    payload = load_checkpoint(path)
    for key in ("model", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; it was not written by study.core.training.save_model")
    if model_name is not None and payload["model"] != model_name:
        raise CheckpointError(f"checkpoint {path} holds model {payload['model']!r}, expected {model_name!r}")
    model = build_model(payload["model"])
    load_state_into(model, payload["state_dict"], str(path))
    return model, payload
