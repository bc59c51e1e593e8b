"""Run one progressive pruning schedule (params.yaml ``prune.<baseline>.<scheme>``) step by step.

The step math lives in ``study.compression.pruning``; this module is the loop around it: per-step kept fractions,
the stop rule (stop after ``stop_after_misses`` steps in a row clearly outside the tolerance, by the paired bound
of ``study.contract``), a checkpoint
per step, and a resume file so that a killed stage restarts after its last finished step instead of
from the dense model (a LeNet-5 schedule is ~10-30 minutes of CPU).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from study.compression import pruning
from study.contract import NM_SCHEME, SELECTION_RULE, paired_counts, step_clearly_outside, step_within_tolerance
from study.progress import line, phase
from study.core import artifacts, models, training
from study.core.data import Split
from study.core.params import ADMMParams, PruneSchedule

# save_step(step number (1-based), target rate, model) -> the checkpoint path it wrote
SaveStep = Callable[[int, float, nn.Module], str]


@dataclass
class ScheduleRun:
    """Everything a finished (or interrupted) schedule produced, in step order."""

    steps: list[dict[str, Any]] = field(default_factory=list)  # rate, val/test accuracy, per-layer, checkpoint
    admm_rows: list[dict[str, Any]] = field(default_factory=list)  # ADMM history of every step (figure F2)
    masks: dict[str, torch.Tensor] | None = None  # masks after the last step
    misses: int = 0  # consecutive steps clearly outside the tolerance
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # model weights after each step


def run_key(schedule: PruneSchedule, settings: ADMMParams, seed: int, dense_sha256: str, augment: str = "none",
            context: Mapping[str, Any] | None = None) -> str:
    """What a resume file must have been written by: the same schedule, ADMM settings, seed, augmentation, dense
    model, selection rule (the stop rule and the step records follow it) and ``context`` (data, runtime settings)."""
    return json.dumps({"schedule": schedule.model_dump(), "admm": settings.model_dump(), "seed": seed,
                       "dense": dense_sha256, "augment": augment, "rule": SELECTION_RULE, **dict(context or {})},
                      sort_keys=True)


def _load_resume(path: Path, key: str) -> ScheduleRun | None:
    if not path.exists():
        return None
    state = artifacts.load_checkpoint(path)
    if state.get("run_key") != key:
        try:
            differing = artifacts.differing_keys(json.loads(state.get("run_key") or "{}"), json.loads(key))
        except (TypeError, ValueError, AttributeError):
            differing = ["its key"]
        line(f"{path} was written under other settings ({', '.join(differing)} differ): starting over")
        return None
    torch.set_rng_state(state["rng_state"])
    return ScheduleRun(state["steps"], state["admm_rows"], state["masks"], state["misses"], state["step_states"])


def _save_resume(path: Path, key: str, run: ScheduleRun) -> None:
    artifacts.save_checkpoint(path, {"run_key": key, "steps": run.steps, "admm_rows": run.admm_rows,
                                     "misses": run.misses, "masks": run.masks, "step_states": run.states,
                                     "rng_state": torch.get_rng_state()})


def run_schedule(
    net: nn.Module,
    splits: Mapping[str, Split],
    scheme: str,
    schedule: PruneSchedule,
    settings: ADMMParams,
    seed: int,
    reference_hits: np.ndarray,
    tolerance_pp: float,
    save_step: SaveStep,
    resume_path: Path | str | None = None,
    resume_key: str = "",
    progress: bool = True,
    augment: str = "none",
) -> ScheduleRun:
    """Prune ``net`` in place through the schedule's rates; return every finished step.

    A step clearly outside ``tolerance_pp`` times ``settings.stop_tolerance_factor`` (the paired lower bound of its
    validation loss against the dense model's per-image ``reference_hits`` exceeds it) counts as a miss; the schedule stops after
    ``schedule.stop_after_misses`` misses in a row. With ``schedule.regrow`` each ADMM phase
    constrains all weights (earlier zeros may come back if the loss wants them, as in the original
    ADMM pruning code); without it an earlier step's zeros stay zero. With ``resume_path``, the state
    after each step is saved there and a rerun under the same ``resume_key`` continues after the last
    finished step (its checkpoints are written again through ``save_step``). ``augment``: the
    baseline's training augmentation, used by ADMM and retraining too.
    """
    training.seed_everything(seed)  # a resumed run then restores the generator state it had saved
    run = _load_resume(Path(resume_path), resume_key) if resume_path else None
    if run is None:
        run = ScheduleRun()
    else:
        for step, weights in zip(run.steps, run.states):  # DVC cleared the outputs: restore the finished steps
            finished = copy.deepcopy(net)
            finished.load_state_dict(weights)
            save_step(step["step"], step["target_rate"], finished)
        net.load_state_dict(run.states[-1])
        line(f"resuming from {resume_path}: {len(run.steps)}/{len(schedule.rates)} steps already done")
    input_shape = pruning.input_shape_of(splits["train"])
    for index, rate in enumerate(schedule.rates):
        if index < len(run.steps):
            continue  # finished before an interruption
        if run.misses >= schedule.stop_after_misses:
            break
        # an N:M schedule prunes each step to its pattern (the step's scheme for the projections), others to a rate
        pattern = schedule.patterns[index] if scheme == NM_SCHEME else None
        keep = (pruning.nm_keep(net, pattern, schedule.density_weights) if pattern else
                pruning.step_keep(net, rate, schedule.allocation, schedule.density_weights, schedule.min_keep, scheme, input_shape))
        with phase(f"step {index + 1}/{len(schedule.rates)} at {pattern or f'{rate:g}x'}"):
            result = pruning.prune_step(
                net, splits["train"], splits["val"], pattern or scheme, keep, settings.admm_config(),
                settings.admm_train(schedule.admm_epochs, seed, augment), settings.retrain(schedule.retrain_epochs, seed, augment),
                None if schedule.regrow else run.masks, progress, schedule.drop_dead, input_shape,
            )
        run.masks = result.masks
        run.admm_rows += [{"step": index + 1, "target_rate": rate, **row} for row in result.admm_history]
        step = {
            "step": index + 1,
            "target_rate": rate,
            "pruning_rate": models.pruning_rate(net),
            "val_accuracy": result.val_accuracy,
            **paired_counts(reference_hits, training.correct_predictions(net, splits["val"])),
            "test_accuracy": training.evaluate(net, splits["test"])["accuracy"],  # reported, never selected on
            "per_layer": pruning.kept_fractions(net),
            "checkpoint": save_step(index + 1, rate, net),
        } | ({"pattern": pattern} if pattern else {})
        run.steps.append(step)
        run.misses = run.misses + 1 if step_clearly_outside(step, settings.stop_tolerance_factor * tolerance_pp) else 0
        line(f"step {index + 1} done", rate=round(step["pruning_rate"], 1), val_accuracy=step["val_accuracy"],
             test_accuracy=step["test_accuracy"], within_tolerance=step_within_tolerance(step, tolerance_pp))
        run.states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        if resume_path:
            _save_resume(Path(resume_path), resume_key, run)
        if run.misses >= schedule.stop_after_misses:
            line(f"stopping: {run.misses} step(s) in a row clearly outside the tolerance")
            break
    return run
