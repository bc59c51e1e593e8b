"""Stage ``seeds@<baseline>``: the dense baseline and the headline pruned models again at other seeds.

One seed decides a lot here: a 0.1-point difference is 10 test images, and the tolerance rule selects on
validation accuracies that move by as much between runs. This stage repeats, at each seed of
``spread.seeds``, what the comparison rests on: the dense baseline, the selected irregular model and the
structured model of the highest compacted rate within tolerance (``study.report.spread.headline_models``).
The seed decides the weight initialization, the batch order and the validation split, as ``seed`` does for
the study. Each pruned model follows its own schedule up to the step the study selected, every step run
whatever its accuracy (no selection: the same procedure, another seed). The models are not kept; the rows
(rate, validation and test accuracy, within tolerance at that seed) go to ``results/seeds/<baseline>``.
"""

from __future__ import annotations

import copy
import hashlib

import pandas as pd
import torch

from study import paths
from study.compression import schedule as progressive
from study.contract import step_within_tolerance
from study.core import catalog, execution, models, training
from study.core.params import Params, PruneSchedule
from study.progress import line, phase
from study.report.spread import headline_models, spread_table
from study.stages.common import StageResult, begin, finish, load_splits, require, resume_context, write_tables


def cut_at(schedule: PruneSchedule, step: int) -> PruneSchedule:
    """The schedule's first ``step`` rates, every one run (no stop on misses)."""
    return schedule.model_copy(update={"rates": schedule.rates[:step], "stop_after_misses": step})


def _state_sha256(net: torch.nn.Module) -> str:
    """Identifies a seed's dense model for the resume files of its pruning runs (it is not kept on disk)."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _row(seed: int, scheme: str, step: int | None, rate: float, val: float, test: float, meets: bool | None) -> dict:
    return {"seed": seed, "scheme": scheme, "step": step, "pruning_rate": rate, "val_accuracy": val,
            "test_accuracy": test, "meets_tolerance": meets}


def recorded_rows(seed: int, dense: dict, pruned: dict[str, dict]) -> list[dict]:
    """The study's own models (seed ``seed``) as rows, from the train and prune records."""
    rows = [_row(seed, "dense", None, 1.0, dense["val_accuracy"], dense["test_accuracy"], None)]
    for scheme, record in pruned.items():
        rows.append(_row(seed, scheme, record["selected_step"], record["pruning_rate"], record["val_accuracy"],
                         record["test_accuracy"], bool(record["meets_tolerance"])))
    return rows


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    schedules = require(params.prune, baseline, "prune", "add a schedule per scheme")
    dense_record = catalog.read_record(layout.read(paths.results("train", baseline)))
    prune_records = catalog.records(layout, "prune", [paths.item(baseline, s) for s in params.compare.schemes])
    chosen = headline_models(prune_records)
    tolerance = params.admm.tolerance_for(baseline)
    line(f"{baseline}: seeds {params.spread.seeds} besides {params.seed}, for dense and "
         + (", ".join(f"{s} (step {r['selected_step']})" for s, r in chosen.items()) or "no pruned model within tolerance"))
    rows = recorded_rows(params.seed, dense_record, chosen)
    for seed in params.spread.seeds:
        seeded = params.model_copy(update={"seed": seed})
        splits = load_splits(seeded, base.dataset)
        training.seed_everything(seed)
        net = execution.place(models.build_model(base.model))
        with phase(f"seed {seed}: dense {baseline}"):
            training.fit(net, splits["train"], splits["val"], base.train_config(seed),
                         resume_path=layout.write(paths.resume("seeds", paths.item(baseline, "dense", seed))),
                         resume_key=resume_context(seeded, splits))
        dense_hits = training.correct_predictions(net, splits["val"])  # the steps are judged against it, image by image
        dense_val = training.evaluate(net, splits["val"])["accuracy"]
        rows.append(_row(seed, "dense", None, models.pruning_rate(net), dense_val,
                         training.evaluate(net, splits["test"])["accuracy"], None))
        dense_sha = _state_sha256(net)
        for scheme, record in chosen.items():
            schedule = cut_at(require(schedules, scheme, f"prune.{baseline}", "add a schedule for this scheme"),
                              int(record["selected_step"]))
            pruned = copy.deepcopy(net)
            resume = layout.write(paths.resume("seeds", paths.item(baseline, scheme, seed)))
            with phase(f"seed {seed}: {scheme} {baseline} to step {record['selected_step']}"):
                steps = progressive.run_schedule(
                    pruned, splits, scheme, schedule, params.admm, seed, dense_hits, tolerance,
                    save_step=lambda step, rate, model: "", resume_path=resume,
                    resume_key=progressive.run_key(schedule, params.admm, seed, dense_sha, base.augment,
                                                   resume_context(seeded, splits)),
                    augment=base.augment,
                ).steps
            last = steps[-1]
            rows.append(_row(seed, scheme, last["step"], last["pruning_rate"], last["val_accuracy"], last["test_accuracy"],
                             step_within_tolerance(last, tolerance)))
            resume.unlink(missing_ok=True)
        layout.write(paths.resume("seeds", paths.item(baseline, "dense", seed))).unlink(missing_ok=True)
    per_seed = pd.DataFrame(rows)
    summary = spread_table(rows)
    write_tables(layout.write(paths.tables("seeds", baseline)), {"per_seed": per_seed, "spread": summary})
    dense_rows = per_seed[per_seed["scheme"] == "dense"]
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": 32,
        # the common keys: the dense baseline over every seed (the mean), so `dvc metrics show` reads it like the others
        "test_accuracy": float(dense_rows["test_accuracy"].mean()),
        "val_accuracy": float(dense_rows["val_accuracy"].mean()),
        "pruning_rate": 1.0,
        "seeds": [params.seed, *params.spread.seeds],
        "tolerance_pp": tolerance,
        "rows": rows,
        # JSON has no NaN: a spread over a single seed has no standard deviation (null)
        "spread": summary.astype(object).where(summary.notna(), None).to_dict(orient="records"),
    }
    metrics = finish(layout, "seeds", baseline, record, clock, ("seeds",), params.seed,
                     {"seeds": record["seeds"], "baseline": base.model_dump(), "admm": params.admm.model_dump()})
    return StageResult(metrics, {"per_seed": per_seed, "spread": summary})
