"""Stages ``quantize@<baseline>-<scheme>-<bits>`` and ``quantize_dense@<baseline>-<bits>``.

Survivors of the selected pruned model (or every weight of the dense one) go to b-bit levels: ADMM
pulls them near their levels, masked mapping snaps them (closest first, retraining the rest). The fully
binarized dense model (bits 1) is trained by a straight-through estimator instead.
"""

from __future__ import annotations

import pandas as pd

from study import paths
from study.compression import pruning, quantize
from study.contract import QUANTIZED_BITS, SCHEMES, check_scheme
from study.core import execution, models, training
from study.core.params import Params
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require


def source_checkpoint(baseline: str, scheme: str) -> str:
    """The model a quantize stage starts from: the dense baseline, or a scheme's selected pruned model."""
    return paths.dense_checkpoint(baseline) if scheme == "dense" else f"{paths.prune_dir(baseline, scheme)}/selected.pt"


def uses_straight_through(scheme: str, bits: int) -> bool:
    """Binary weights of a dense model train by STE (ADMM + masked mapping cannot move a weight off 0 to +-alpha)."""
    return scheme == "dense" and bits == 1


def run(params: Params, layout: paths.Layout, baseline: str, scheme: str, bits: int) -> StageResult:
    clock = begin(params)
    check_scheme(scheme, SCHEMES)
    if bits not in QUANTIZED_BITS:
        raise ValueError(f"bits={bits}: a quantize stage targets one of {list(QUANTIZED_BITS)} (1 = binary)")
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    settings = require(params.quantize, baseline, "quantize", "add the baseline's quantization settings")
    admm = params.admm
    splits = load_splits(params, base.dataset)
    source = source_checkpoint(baseline, scheme)
    net, meta = training.load_model(layout.read(source), base.model)
    net = execution.place(net)
    if meta.get("scheme", "dense") != scheme:
        raise ValueError(f"{source} holds a {meta.get('scheme', 'dense')!r} model, not {scheme!r}")
    source_test = training.evaluate(net, splits["test"])["accuracy"]
    source_val = training.evaluate(net, splits["val"])["accuracy"]
    line(f"{baseline} {scheme}: pruning rate {models.pruning_rate(net):.1f}x, val {100 * source_val:.2f}% before quantization")

    training.seed_everything(params.seed)
    admm_history, mapping_history, binary_history = [], [], []
    keep_support = scheme != "dense"  # a pruned model keeps its zeros and its survivors stay non-zero
    with phase(f"quantize {baseline} {scheme} to {bits} bits"):
        if uses_straight_through(scheme, bits):
            binary_history = quantize.binarize_with_ste(
                net, splits["train"], splits["val"], admm.retrain(settings.binary_epochs, params.seed, base.augment))
            alphas = {n: float(m.weight.abs().max()) for n, m in models.prunable_layers(net).items()}
        else:
            alphas, admm_history = quantize.admm_quantize(
                net, splits["train"], splits["val"], bits, admm.admm_config(),
                admm.admm_train(settings.admm_epochs, params.seed, base.augment), keep_support=keep_support)
            mapping_history = quantize.masked_mapping(
                net, splits["train"], splits["val"], bits, alphas, settings.mapping_fractions,
                admm.retrain(settings.mapping_epochs, params.seed, base.augment), keep_support=keep_support)
    quantize.check_on_levels(net, bits, alphas)
    test = training.evaluate(net, splits["test"])
    val = training.evaluate(net, splits["val"])
    checkpoint = paths.quantized_checkpoint(baseline, scheme, bits)
    training.save_model(layout.write(checkpoint), net, base.model, base.dataset,
                        {"scheme": scheme, "weight_bits": bits, "alphas": alphas})
    levels = {n: int(m.weight.detach().unique().numel()) for n, m in models.prunable_layers(net).items()}
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": scheme,
        "weight_bits": bits,
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "pruning_rate": models.pruning_rate(net),
        "checkpoint": checkpoint,
        "source_checkpoint": source,
        "source_test_accuracy": source_test,
        "source_val_accuracy": source_val,
        "alphas": alphas,
        "distinct_values": levels,
        "per_layer": pruning.kept_fractions(net),
        "admm_history": admm_history,
        "mapping_history": mapping_history,
        # epoch seconds are timings: they stay out of the record later stages read
        "binary_history": [{k: v for k, v in row.items() if k != "seconds"} for row in binary_history],
    }
    metrics = finish(layout, "quantize", f"{baseline}-{scheme}-{bits}", record, clock, ("source_test_accuracy",),
                     params.seed, {"quantize": settings.model_dump(), "admm": admm.model_dump()})
    history = pd.DataFrame(mapping_history or record["binary_history"])
    return StageResult(metrics, {"history": history, "distinct_values": pd.Series(levels, name="distinct values").to_frame()})
