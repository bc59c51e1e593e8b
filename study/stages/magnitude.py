"""Stage ``magnitude@<baseline>``: the irregular schedule's rates by iterative global magnitude pruning
(``torch.nn.utils.prune``) with masked retraining at ADMM's epoch budget: the baseline ADMM must beat.

Same rates, same stop rule, same selection on validation and the same number of training epochs per step
as ``prune@<baseline>-irregular`` (ADMM epochs + retraining epochs, all spent retraining here). Rows of
T2 and T3 and a line of F3 in the report.
"""

from __future__ import annotations

import pandas as pd
import torch

from study import paths
from study.compression import magnitude
from study.contract import select_step, step_within_tolerance
from study.core import execution, training
from study.core.params import Params
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require

METHOD = "iterative global magnitude pruning (Han et al. 2015; torch.nn.utils.prune)"


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    schedule = require(require(params.prune, baseline, "prune", "add a schedule per scheme"), "irregular",
                       f"prune.{baseline}", "the magnitude baseline runs the irregular schedule's rates; add one")
    settings = params.admm
    splits = load_splits(params, base.dataset)
    net, _ = training.load_model(layout.read(paths.dense_checkpoint(baseline)), base.model)
    net = execution.place(net)
    dense_val = training.evaluate(net, splits["val"])["accuracy"]
    dense_test = training.evaluate(net, splits["test"])["accuracy"]
    dense_hits = training.correct_predictions(net, splits["val"])  # each step is judged against it, image by image
    tolerance = settings.tolerance_for(baseline)
    epochs = schedule.admm_epochs + schedule.retrain_epochs  # ADMM's whole budget per step, all of it retraining
    line(f"{baseline}: dense val {100 * dense_val:.2f}%; {epochs} retraining epochs per step; "
         f"a step qualifies when the paired 95% upper bound of its loss is within {tolerance:g} points")
    out_dir = f"models/{baseline}/magnitude"

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        checkpoint = f"{out_dir}/step{step}.pt"
        training.save_model(layout.write(checkpoint), model, base.model, base.dataset,
                            {"scheme": "irregular", "method": "magnitude", "target_rate": rate})
        return checkpoint

    with phase(f"magnitude {baseline}"):
        run_ = magnitude.run_schedule(net, splits, list(schedule.rates), settings.retrain(epochs, params.seed, base.augment),
                                      dense_hits, tolerance, schedule.stop_after_misses, save_step)
    selected = select_step(run_.steps, tolerance)
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": "irregular",
        "weight_bits": 32,
        "test_accuracy": selected["test_accuracy"],
        "val_accuracy": selected["val_accuracy"],
        "pruning_rate": selected["pruning_rate"],
        "method": METHOD,
        "meets_tolerance": step_within_tolerance(selected, tolerance),
        "baseline_val_accuracy": dense_val,
        "baseline_test_accuracy": dense_test,
        "tolerance_pp": tolerance,
        "epochs_per_step": epochs,
        "selected_step": selected["step"],
        "selected_checkpoint": selected["checkpoint"],
        "per_layer": selected["per_layer"],
        "steps": run_.steps,
    }
    metrics = finish(layout, "magnitude", baseline, record, clock, ("meets_tolerance", "selected_step"), params.seed,
                     {"rates": list(schedule.rates), "epochs_per_step": epochs, "retrain": settings.model_dump()})
    steps = pd.DataFrame([{k: v for k, v in s.items() if k not in ("per_layer", "checkpoint")} for s in run_.steps])
    steps["selected"] = steps["step"] == selected["step"]
    return StageResult(metrics, {"steps": steps})
