"""What the stages of the two baselines nobody here wrote share (``magnitude@`` and ``l1filter@``): one of ADMM's
schedules (its rates) reached by a ``torch.nn.utils.prune`` method with masked retraining, at ADMM's whole epoch
budget per step, with the same stop and selection rules, and the record later stages read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from study import paths
from study.compression import magnitude
from study.contract import select_step, step_within_tolerance
from study.core import execution, training
from study.core.params import Params
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require


@dataclass(frozen=True)
class Rival:
    """One baseline method: which stage and schedule it is, how it prunes a step, and what it adds to a step."""

    stage: str  # the stage kind, also the folder of its records ("magnitude", "l1filter")
    schedule_scheme: str  # whose rates (and, for filter pruning, per-layer split) it runs
    method: str  # the method with its citation (tables T2 and T3)
    label: str  # its short name in T3, the frontier tables and the figure
    prune_to: Callable[[Params, str, torch.nn.Module, float], None]  # (params, baseline, model, rate): one step's masks
    not_applicable: Callable[[torch.nn.Module], str | None] = lambda model: None  # the reason it cannot run, or None
    step_extra: Callable[[torch.nn.Module, str], dict[str, Any]] = lambda model, model_name: {}  # more per step
    record_keys: tuple[str, ...] = ()  # which of those the record repeats for the selected step
    # where its record goes, (stage folder, name): its own folder, or beside the ADMM schedules' records (ASP), whose
    # folder every later stage depends on already
    record_at: Callable[[str], tuple[str, str]] | None = None

    def record_path(self, baseline: str) -> tuple[str, str]:
        return self.record_at(baseline) if self.record_at else (self.stage, baseline)


def run(rival: Rival, params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    schedule = require(require(params.prune, baseline, "prune", "add a schedule per scheme"), rival.schedule_scheme,
                       f"prune.{baseline}", f"the {rival.label} baseline runs the {rival.schedule_scheme} schedule's rates; add one")
    settings = params.admm
    splits = load_splits(params, base.dataset)
    net, _ = training.load_model(layout.read(paths.dense_checkpoint(baseline)), base.model)
    net = execution.place(net)
    dense_val = training.evaluate(net, splits["val"])["accuracy"]
    dense_test = training.evaluate(net, splits["test"])["accuracy"]
    dense_hits = training.correct_predictions(net, splits["val"])  # each step is judged against it, image by image
    tolerance = settings.tolerance_for(baseline)
    epochs = schedule.admm_epochs + schedule.retrain_epochs  # ADMM's whole budget per step, all of it retraining
    common = {"model": base.model, "dataset": base.dataset, "scheme": rival.schedule_scheme, "weight_bits": 32,
              "method": rival.method, "method_label": rival.label, "baseline_val_accuracy": dense_val,
              "baseline_test_accuracy": dense_test, "tolerance_pp": tolerance, "epochs_per_step": epochs}
    provenance = {"rates": list(schedule.rates), "epochs_per_step": epochs, "retrain": settings.model_dump()}
    reason = rival.not_applicable(net)
    if reason is not None:  # a record with no steps (the dense model in the common keys), so later stages go on
        line(f"{baseline}: {reason}; no steps")
        record = {**common, "test_accuracy": dense_test, "val_accuracy": dense_val, "pruning_rate": 1.0,
                  "not_applicable": reason, "selected_step": 0, "steps": []}
        return StageResult(finish(layout, *rival.record_path(baseline), record, clock, ("selected_step",), params.seed, provenance),
                           {"steps": pd.DataFrame()})
    line(f"{baseline}: dense val {100 * dense_val:.2f}%; {epochs} retraining epochs per step; a step qualifies when "
         f"the paired 95% upper bound of its loss is within {tolerance:g} points")

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        checkpoint = f"models/{baseline}/{rival.stage}/step{step}.pt"
        training.save_model(layout.write(checkpoint), model, base.model, base.dataset,
                            {"scheme": rival.schedule_scheme, "method": rival.stage, "target_rate": rate})
        return checkpoint

    with phase(f"{rival.stage} {baseline}"):
        run_ = magnitude.run_schedule(net, splits, list(schedule.rates), settings.retrain(epochs, params.seed, base.augment),
                                      dense_hits, tolerance, schedule.stop_after_misses, save_step,
                                      prune_to=lambda model, rate: rival.prune_to(params, baseline, model, rate),
                                      stop_tolerance_pp=params.admm.stop_tolerance_for(baseline))
    for step in run_.steps:
        step.update(rival.step_extra(training.load_model(layout.write(step["checkpoint"]), base.model)[0], base.model))
    selected = select_step(run_.steps, tolerance)
    record = {**common, "test_accuracy": selected["test_accuracy"], "val_accuracy": selected["val_accuracy"],
              "pruning_rate": selected["pruning_rate"], "meets_tolerance": step_within_tolerance(selected, tolerance),
              "selected_step": selected["step"], "selected_checkpoint": selected["checkpoint"],
              **{k: selected[k] for k in rival.record_keys},
              "per_layer": selected["per_layer"], "steps": run_.steps}
    metrics = finish(layout, *rival.record_path(baseline), record, clock, ("meets_tolerance", "selected_step", *rival.record_keys),
                     params.seed, provenance)
    steps = pd.DataFrame([{k: v for k, v in s.items() if k not in ("per_layer", "checkpoint")} for s in run_.steps])
    steps["selected"] = steps["step"] == selected["step"]
    return StageResult(metrics, {"steps": steps})
