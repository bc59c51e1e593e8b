"""Stage ``prune@<baseline>-<scheme>``: progressive ADMM pruning, selection on validation, compaction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from study import paths
from study.compression import compaction, pruning
from study.compression import schedule as progressive
from study.contract import NM_SCHEME, PRUNING_SCHEMES, accuracy_threshold, check_scheme, select_step, step_within_tolerance
from study.core import artifacts, data, execution, models, training
from study.core.params import Params
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require, resume_context


def run(params: Params, layout: paths.Layout, baseline: str, scheme: str) -> StageResult:
    clock = begin(params)
    check_scheme(scheme, (*PRUNING_SCHEMES, NM_SCHEME))
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    schedule = require(require(params.prune, baseline, "prune", "add a schedule per scheme"), scheme,
                       f"prune.{baseline}", "add a schedule for this scheme or remove it from compare.schemes")
    settings = params.admm
    splits = load_splits(params, base.dataset)
    dense_checkpoint = layout.read(paths.dense_checkpoint(baseline))
    net, _ = training.load_model(dense_checkpoint, base.model)
    net = execution.place(net)
    dense_val = training.evaluate(net, splits["val"])["accuracy"]
    dense_test = training.evaluate(net, splits["test"])["accuracy"]
    dense_hits = training.correct_predictions(net, splits["val"])  # each step is judged against it, image by image
    tolerance = settings.tolerance_for(baseline)
    threshold = accuracy_threshold(dense_val, tolerance)
    line(f"{baseline}: dense val {100 * dense_val:.2f}%, test {100 * dense_test:.2f}%; a step qualifies when the paired "
         f"95% upper bound of its loss is within {tolerance:g} points (val >= {100 * threshold:.2f}% at the least)")
    out_dir = paths.prune_dir(baseline, scheme)

    def save_step(step: int, rate: float, model: torch.nn.Module) -> str:
        checkpoint = f"{out_dir}/step{step}.pt"
        training.save_model(layout.write(checkpoint), model, base.model, base.dataset, {"scheme": scheme, "target_rate": rate})
        return checkpoint

    # The state after each finished step goes to the resume file; a rerun of this very configuration continues there.
    with phase(f"prune {baseline} {scheme}"):
        run_ = progressive.run_schedule(
            net, splits, scheme, schedule, settings, params.seed, dense_hits, tolerance, save_step,
            layout.write(paths.resume("prune", paths.item(baseline, scheme))),
            progressive.run_key(schedule, settings, params.seed, data.sha256_of(Path(dense_checkpoint)), base.augment,
                                resume_context(params, splits)),
            augment=base.augment,
        )
    selected = select_step(run_.steps, tolerance)
    chosen, _ = training.load_model(layout.write(selected["checkpoint"]), base.model)
    selected_checkpoint = f"{out_dir}/selected.pt"  # what the quantize stages start from
    training.save_model(layout.write(selected_checkpoint), chosen, base.model, base.dataset,
                        {"scheme": scheme, "target_rate": selected["target_rate"], "step": selected["step"]})
    # Structured pruning leaves whole units dead: the compacted model is the fair size (same outputs).
    compact, compact_sizes = compaction.compact(chosen, models.INPUT_SHAPES[base.model])
    compact_rate = models.count_weights(chosen) / models.count_nonzero_weights(compact)
    name = paths.item(baseline, scheme)
    artifacts.atomic_write_text(layout.write(f"results/prune/{name}.admm.csv"), pd.DataFrame(run_.admm_rows).to_csv(index=False))
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": scheme,
        "weight_bits": 32,
        "test_accuracy": selected["test_accuracy"],
        "val_accuracy": selected["val_accuracy"],
        "pruning_rate": selected["pruning_rate"],
        "meets_tolerance": step_within_tolerance(selected, tolerance),
        "baseline_val_accuracy": dense_val,
        "baseline_test_accuracy": dense_test,
        "tolerance_pp": tolerance,
        "selected_step": selected["step"],
        "selected_checkpoint": selected_checkpoint,
        "compact_pruning_rate": compact_rate,
        "compact_sizes": compact_sizes,
        "per_layer": selected["per_layer"],
        "steps": run_.steps,
        "admm_history": run_.admm_rows,
    }
    metrics = finish(layout, "prune", name, record, clock, ("compact_pruning_rate", "meets_tolerance", "selected_step"),
                     params.seed, {"schedule": schedule.model_dump(), "admm": settings.model_dump()})
    layout.write(paths.resume("prune", name)).unlink(missing_ok=True)  # finished: the resume state has served its purpose
    steps = pd.DataFrame([{k: v for k, v in s.items() if k not in ("per_layer", "checkpoint")} for s in run_.steps])
    steps["selected"] = steps["step"] == selected["step"]
    return StageResult(metrics, {"steps": steps, "per_layer": pd.Series(selected["per_layer"], name="kept fraction").to_frame()})
