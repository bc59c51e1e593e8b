"""Stage ``l1filter@<baseline>``: the filter schedule's rates by L1-norm filter pruning (``prune.ln_structured``)
with masked retraining at ADMM's epoch budget: the structured baseline ADMM must beat, and a second method on
the structured side of every frontier.

Same rates, same per-layer split (``density_weights``), same stop rule, same selection on validation and the
same number of training epochs per step as ``prune@<baseline>-filter`` (ADMM epochs + retraining epochs, all
spent retraining here).
"""

from __future__ import annotations

import pandas as pd
import torch

from study import paths
from study.compression import compaction, coupling, l1_filter, magnitude
from study.contract import select_step, step_within_tolerance
from study.core import execution, models, training
from study.core.params import Params
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require

METHOD = l1_filter.METHOD
LABEL = "L1 filter"  # the method's name in table T3 and the frontier figure
NOT_APPLICABLE = ("the network joins channels (residual sums or batch norm): ln_structured prunes one layer at a time, "
                  "so the L1 filter baseline runs on plain chains only")


def _not_applicable(params: Params, layout: paths.Layout, baseline: str, base, clock, dense_val: float, dense_test: float,
                    tolerance: float, epochs: int) -> StageResult:
    """A record with no steps (the dense model in the common keys) and the reason, so later stages go on."""
    line(f"{baseline}: {NOT_APPLICABLE}; no steps")
    record = {"model": base.model, "dataset": base.dataset, "scheme": "filter", "weight_bits": 32,
              "test_accuracy": dense_test, "val_accuracy": dense_val, "pruning_rate": 1.0, "method": METHOD,
              "method_label": LABEL, "not_applicable": NOT_APPLICABLE, "baseline_val_accuracy": dense_val,
              "baseline_test_accuracy": dense_test, "tolerance_pp": tolerance, "epochs_per_step": epochs,
              "selected_step": 0, "steps": []}
    metrics = finish(layout, "l1filter", baseline, record, clock, ("selected_step",), params.seed, {"epochs_per_step": epochs})
    return StageResult(metrics, {"steps": pd.DataFrame()})


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    schedule = require(require(params.prune, baseline, "prune", "add a schedule per scheme"), "filter",
                       f"prune.{baseline}", "the L1 filter baseline runs the filter schedule's rates; add one")
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
    out_dir = paths.l1filter_dir(baseline)
    input_shape = models.INPUT_SHAPES[base.model]
    if coupling.uses_spaces(net, "filter"):
        return _not_applicable(params, layout, baseline, base, clock, dense_val, dense_test, tolerance, epochs)

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        checkpoint = f"{out_dir}/step{step}.pt"
        training.save_model(layout.write(checkpoint), model, base.model, base.dataset,
                            {"scheme": "filter", "method": "l1filter", "target_rate": rate})
        return checkpoint

    def prune_to(model: torch.nn.Module, rate: float) -> None:
        l1_filter.prune_filters_to_rate(model, rate, schedule.density_weights, input_shape)

    with phase(f"l1filter {baseline}"):
        run_ = magnitude.run_schedule(net, splits, list(schedule.rates), settings.retrain(epochs, params.seed, base.augment),
                                      dense_hits, tolerance, schedule.stop_after_misses, save_step, prune_to=prune_to)
    for step in run_.steps:  # the fair size of a structured model is its compacted one
        plain, _ = training.load_model(layout.write(step["checkpoint"]), base.model)
        compact, _ = compaction.compact(plain, input_shape)
        step["compact_pruning_rate"] = models.count_weights(plain) / models.count_nonzero_weights(compact)
    selected = select_step(run_.steps, tolerance)
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": "filter",
        "weight_bits": 32,
        "test_accuracy": selected["test_accuracy"],
        "val_accuracy": selected["val_accuracy"],
        "pruning_rate": selected["pruning_rate"],
        "method": METHOD,
        "method_label": LABEL,
        "meets_tolerance": step_within_tolerance(selected, tolerance),
        "baseline_val_accuracy": dense_val,
        "baseline_test_accuracy": dense_test,
        "tolerance_pp": tolerance,
        "epochs_per_step": epochs,
        "selected_step": selected["step"],
        "selected_checkpoint": selected["checkpoint"],
        "compact_pruning_rate": selected["compact_pruning_rate"],
        "per_layer": selected["per_layer"],
        "steps": run_.steps,
    }
    metrics = finish(layout, "l1filter", baseline, record, clock, ("meets_tolerance", "selected_step", "compact_pruning_rate"),
                     params.seed, {"rates": list(schedule.rates), "epochs_per_step": epochs, "retrain": settings.model_dump()})
    steps = pd.DataFrame([{k: v for k, v in s.items() if k not in ("per_layer", "checkpoint")} for s in run_.steps])
    steps["selected"] = steps["step"] == selected["step"]
    return StageResult(metrics, {"steps": steps})
