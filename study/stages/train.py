"""Stage ``train@<baseline>``: a dense baseline trained with seeded SGD; the test split is only reported."""

from __future__ import annotations

import pandas as pd

from study import paths
from study.core import artifacts, execution, models, training
from study.core.params import Params
from study.progress import phase
from study.stages.common import StageResult, begin, finish, load_splits, require, resume_context


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    config = base.train_config(params.seed)
    splits = load_splits(params, base.dataset)
    training.seed_everything(params.seed)
    net = execution.place(models.build_model(base.model))
    macs = models.count_macs(net, models.INPUT_SHAPES[base.model])
    resume = layout.write(paths.resume("train", baseline))
    with phase(f"train {baseline}"):
        history = pd.DataFrame(training.fit(net, splits["train"], splits["val"], config, resume_path=resume,
                                            resume_key=resume_context(params, splits)))
    test = training.evaluate(net, splits["test"])
    val = training.evaluate(net, splits["val"])
    training.save_model(layout.write(paths.dense_checkpoint(baseline)), net, base.model, base.dataset)
    # per-epoch seconds make the history a record of this run, not a result: it sits beside the metrics
    artifacts.atomic_write_text(layout.write(f"metrics/train/{baseline}.history.csv"), history.to_csv(index=False))
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": "dense",
        "weight_bits": 32,
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "pruning_rate": models.pruning_rate(net),
        "test_loss": test["loss"],
        "epochs": base.epochs,
        "parameters": models.count_parameters(net),
        "weights": models.count_weights(net),
        "macs": sum(macs.values()),
        "fp32_bytes": 4 * models.count_parameters(net),
    }
    metrics = finish(layout, "train", baseline, record, clock, ("macs", "parameters"), params.seed,
                     {**base.model_dump(), **params.data.model_dump()})
    resume.unlink(missing_ok=True)  # finished: the resume state has served its purpose
    layers = pd.DataFrame({"weights": {n: m.weight.numel() for n, m in models.prunable_layers(net).items()},
                           "MACs": macs})
    return StageResult(metrics, {"history": history, "layers": layers})
