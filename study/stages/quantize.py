"""Stages ``quantize@<baseline>-<scheme>-<bits>`` and ``quantize_dense@<baseline>-<bits>``.

Survivors of the selected pruned model (or every weight of the dense one) go to b-bit levels. First they
are snapped onto the levels at once (no training); when that keeps the validation accuracy within
``snap_within_pp`` of the source model's, it is the result (typically at 8 bits). Otherwise ADMM pulls them
near their levels and masked mapping snaps them (closest first, retraining the rest); the fully binarized
dense model (bits 1) is trained by a straight-through estimator instead. Of the snapped and the trained
model the one better on validation is kept: a short constant-rate retraining can cost a converged model
more than snapping does.
"""

from __future__ import annotations

import copy

import pandas as pd
from torch import nn

from study import paths
from study.compression import pruning, quantize
from study.contract import QUANTIZED_BITS, SCHEMES, check_scheme
from study.core import data, execution, models, training
from study.core.params import Params, QuantizeParams
from study.progress import line, phase
from study.stages.common import StageResult, begin, finish, load_splits, require


def source_checkpoint(baseline: str, scheme: str) -> str:
    """The model a quantize stage starts from: the dense baseline, or a scheme's selected pruned model."""
    return paths.dense_checkpoint(baseline) if scheme == "dense" else f"{paths.prune_dir(baseline, scheme)}/selected.pt"


def uses_straight_through(scheme: str, bits: int) -> bool:
    """Binary weights of a dense model train by STE (ADMM + masked mapping cannot move a weight off 0 to +-alpha)."""
    return scheme == "dense" and bits == 1


def snapped_is_enough(snapped_val: float, source_val: float, within_pp: float | None) -> bool:
    """Whether post-training snapping loses at most ``within_pp`` points of validation accuracy (never, for None):
    then trained quantization, which costs minutes and can only try to win those points back, is skipped."""
    return within_pp is not None and 100 * (source_val - snapped_val) <= within_pp + 1e-9


def train_onto_levels(net: nn.Module, splits: dict[str, data.Split], bits: int, scheme: str, keep_support: bool,
                      params: Params, augment: str, settings: QuantizeParams) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Trained quantization, in place: ADMM towards the levels then masked mapping, or STE for the binary
    dense model. Returns (per-layer scales, histories by kind)."""
    admm = params.admm
    if uses_straight_through(scheme, bits):
        history = quantize.binarize_with_ste(
            net, splits["train"], splits["val"], admm.retrain(settings.binary_epochs, params.seed, augment))
        alphas = {n: float(m.weight.abs().max()) for n, m in models.prunable_layers(net).items()}
        return alphas, {"admm": [], "mapping": [], "binary": history}
    alphas, admm_history = quantize.admm_quantize(
        net, splits["train"], splits["val"], bits, admm.admm_config(),
        admm.admm_train(settings.admm_epochs, params.seed, augment), keep_support=keep_support)
    mapping_history = quantize.masked_mapping(
        net, splits["train"], splits["val"], bits, alphas, settings.mapping_fractions,
        admm.retrain(settings.mapping_epochs, params.seed, augment), keep_support=keep_support)
    return alphas, {"admm": admm_history, "mapping": mapping_history, "binary": []}


def run(params: Params, layout: paths.Layout, baseline: str, scheme: str, bits: int) -> StageResult:
    clock = begin(params)
    check_scheme(scheme, SCHEMES)
    if bits not in QUANTIZED_BITS:
        raise ValueError(f"bits={bits}: a quantize stage targets one of {list(QUANTIZED_BITS)} (1 = binary)")
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    settings = require(params.quantize, baseline, "quantize", "add the baseline's quantization settings")
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
    histories: dict[str, list[dict]] = {"admm": [], "mapping": [], "binary": []}
    keep_support = scheme != "dense"  # a pruned model keeps its zeros and its survivors stay non-zero
    trained_val = None
    with phase(f"quantize {baseline} {scheme} to {bits} bits"):
        source_state = copy.deepcopy(net.state_dict())
        alphas = quantize.snap_to_levels(net, bits, keep_support)
        snapped_val = training.evaluate(net, splits["val"])["accuracy"]
        line(f"snapped onto the {bits}-bit levels without training", val_accuracy=snapped_val)
        if not snapped_is_enough(snapped_val, source_val, settings.snap_within_pp):
            snapped = (copy.deepcopy(net.state_dict()), alphas)
            net.load_state_dict(source_state)
            alphas, histories = train_onto_levels(net, splits, bits, scheme, keep_support, params, base.augment, settings)
            trained_val = training.evaluate(net, splits["val"])["accuracy"]
            if trained_val < snapped_val:  # selection on validation: training made it worse
                net.load_state_dict(snapped[0])
                alphas = snapped[1]
    method = "trained" if trained_val is not None and trained_val >= snapped_val else "snapped"
    line(f"kept the {method} model", snapped_val_accuracy=snapped_val,
         **({"trained_val_accuracy": trained_val} if trained_val is not None else {}))
    quantize.check_on_levels(net, bits, alphas, keep_support)
    test = training.evaluate(net, splits["test"])
    val_accuracy = trained_val if method == "trained" else snapped_val  # the kept model's, measured above
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
        "val_accuracy": val_accuracy,
        "pruning_rate": models.pruning_rate(net),
        "checkpoint": checkpoint,
        "source_checkpoint": source,
        "source_test_accuracy": source_test,
        "source_val_accuracy": source_val,
        "method": method,  # snapped (no training) or trained (ADMM + masked mapping, or STE for binary dense)
        "snapped_val_accuracy": snapped_val,
        "trained_val_accuracy": trained_val,  # None: snapping was within snap_within_pp, training skipped
        "alphas": alphas,
        "distinct_values": levels,
        "per_layer": pruning.kept_fractions(net),
        "admm_history": histories["admm"],
        "mapping_history": histories["mapping"],
        # epoch seconds are timings: they stay out of the record later stages read
        "binary_history": [{k: v for k, v in row.items() if k != "seconds"} for row in histories["binary"]],
    }
    metrics = finish(layout, "quantize", paths.item(baseline, scheme, bits), record, clock, ("source_test_accuracy", "method"),
                     params.seed, {"quantize": settings.model_dump(), "admm": params.admm.model_dump()})
    history = pd.DataFrame(histories["mapping"] or record["binary_history"])
    return StageResult(metrics, {"history": history, "distinct_values": pd.Series(levels, name="distinct values").to_frame()})
