"""Stage ``storage@<baseline>``: every model of a baseline encoded bit-exactly (T5, F4, F5).

Each model (dense, the selected pruned model of each scheme, each quantized model) is encoded layer by
layer with ``study.costs.encoding``: real bit streams whose lengths are counted by category. Structured
models are compacted first; irregular layers take the cheapest sparse format.
"""

from __future__ import annotations

import pandas as pd

from study import paths
from study.contract import accuracy_threshold, lowest_within_tolerance
from study.core import catalog, models, training
from study.core.params import Params
from study.costs import storage
from study.stages.common import StageResult, begin, finish, write_tables


def encode_all(entries: list[catalog.Entry], model_name: str, settings, threshold: float, dense_weights: int):
    """Per model: its storage summary (one row) and its per-layer table."""
    summaries, layer_tables = [], []
    for entry in entries:
        net, _ = training.load_model(entry.checkpoint, model_name)
        layers = storage.model_storage(net, entry.scheme, entry.weight_bits, models.INPUT_SHAPES[model_name],
                                       settings.index_bits, settings.formats)
        tag = {"scheme": entry.scheme, "weight_bits": entry.weight_bits}
        layer_tables.append(layers.assign(**tag))
        summaries.append({**tag, "test_accuracy": entry.test_accuracy, "val_accuracy": entry.val_accuracy,
                          "within_tolerance": entry.val_accuracy >= threshold,
                          "formats": ",".join(sorted(set(layers["format"]))), **storage.summarize(layers, dense_weights)})
    models_table = pd.DataFrame(summaries).sort_values(["weight_bits", "total_bits"], ascending=[False, True])
    return models_table, pd.concat(layer_tables, ignore_index=True)


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    settings = params.storage
    base = params.baselines[baseline]
    dense_record, entries = catalog.baseline_models(layout, baseline, params.compare.schemes, params.compare.weight_bits)
    tolerance = params.admm.tolerance_for(baseline)
    threshold = accuracy_threshold(dense_record["val_accuracy"], tolerance)
    models_table, layers_table = encode_all(entries, base.model, settings, threshold, dense_record["weights"])

    # Irregular masks: formats against the bound, break-even grid, ideal index coding against the best structured model.
    irregular = next(e for e in entries if e.scheme == "irregular" and e.weight_bits == 32)
    irregular_net, _ = training.load_model(irregular.checkpoint, base.model)
    irregular_weights = {n: l.weight.detach() for n, l in models.prunable_layers(irregular_net).items()}
    formats_table = storage.format_comparison(irregular_weights, settings.formats, settings.index_bits)
    break_even = storage.break_even_grid(irregular_weights, settings.break_even_weight_bits, settings.break_even_index_bits)
    structured_fp32 = models_table[(models_table["weight_bits"] == 32) & ~models_table["scheme"].isin(["dense", "irregular"])]
    best_structured = lowest_within_tolerance(structured_fp32, "nonzero")
    ideal = storage.ideal_comparison(irregular_weights, int(best_structured["nonzero"]), settings.break_even_weight_bits)
    ideal.insert(0, "structured_scheme", best_structured["scheme"])

    tables = {"models": models_table, "layers": layers_table, "formats": formats_table, "break-even": break_even, "ideal": ideal}
    write_tables(layout.write(paths.tables("storage", baseline)), tables)
    # The headline: the smallest stored model among those within the accuracy tolerance (chosen on validation).
    smallest = lowest_within_tolerance(models_table, "total_bits")
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": smallest["scheme"],
        "weight_bits": int(smallest["weight_bits"]),
        "test_accuracy": float(smallest["test_accuracy"]),
        "val_accuracy": float(smallest["val_accuracy"]),
        "pruning_rate": float(smallest["pruning_rate"]),
        "total_kb": float(smallest["total_kb"]),
        "compression_ratio": float(smallest["compression_ratio"]),
        "smallest_within_tolerance": bool(smallest["within_tolerance"]),
        "best_structured_scheme": best_structured["scheme"],
        "models": models_table.to_dict(orient="records"),
    }
    metrics = finish(layout, "storage", baseline, record, clock, ("total_kb", "compression_ratio"), params.seed,
                     {"storage": settings.model_dump(), "tolerance_pp": tolerance})
    return StageResult(metrics, tables)
