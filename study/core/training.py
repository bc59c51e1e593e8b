"""Seeded training and evaluation with per-epoch checkpoints that a rerun resumes from.

Kept free of pruning logic: ADMM and masked retraining hook in through ``step_hooks`` (called after
every optimizer step) and ``loss_terms`` (extra differentiable terms added to the loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from study.core import augment, execution
from study.core.augment import AUGMENTATIONS
from study.progress import line
from study.core.artifacts import CheckpointError, load_checkpoint, load_state_into, save_checkpoint
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


def _scored_batches(model: nn.Module, split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits, labels) of a split's batches in order, on the model's device, in eval mode."""
    run = execution.current()
    device = execution.model_device(model)
    for x, y in split.batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
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
) -> list[dict[str, Any]]:
    """Train ``model`` in place; return the per-epoch history (train loss, val accuracy/loss, lr, seconds).

    With ``resume_path``, the full training state (weights, optimizer, RNG, history) is saved there
    atomically after every epoch, and a rerun with the same config continues after the last finished
    epoch instead of starting over.

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
    if resume_path is not None and Path(resume_path).exists():
        state = load_checkpoint(resume_path)
        if state.get("config") != asdict(config):
            raise CheckpointError(
                f"resume checkpoint {resume_path} was written with config {state.get('config')}, "
                f"not {asdict(config)}; delete it to start over"
            )
        load_state_into(model, state["model_state"], str(resume_path))
        optimizer.load_state_dict(state["optimizer_state"])
        generator.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng_state"])
        history = list(state["history"])
        start_epoch = len(history)
        line(f"resuming from {resume_path}: {start_epoch}/{config.epochs} epochs already done")

    model.train()
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        lr = _lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, seen = 0.0, 0
        net = run.wrap(model)  # DistributedDataParallel in a distributed run, else the model itself
        for x, y, batch_size in train.training_batches(config.batch_size, generator, config.augment, run.rank, run.world_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
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
                    "config": asdict(config),
                    "model_state": model.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "generator_state": generator.get_state(),
                    "torch_rng_state": torch.get_rng_state(),
                    "history": history,
                },
            )
    return history


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
