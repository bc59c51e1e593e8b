"""Stage ``energy@<baseline>``: energy per inference of every model of a baseline, by component (T6, F6).

Per-layer counts (MACs, filler MACs, idle lane-cycles, index decodes, SRAM and DRAM bits) from the models
as stored (the same formats and index widths as the storage stage), times the energy table of
``params.yaml: energy``, under two memory assumptions: weights streamed from DRAM at every inference
(``total_nj``), and weights kept on chip when the stored model fits ``energy.on_chip_kb``
(``total_nj_on_chip``). The conventions are listed in ``study/costs/energy.py``.
"""

from __future__ import annotations

import pandas as pd

from study import paths
from study.contract import accuracy_threshold, lowest_within_tolerance
from study.core import catalog, models, training
from study.core.params import Params
from study.costs import energy
from study.stages.common import StageResult, begin, finish, write_tables


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    if params.energy is None:
        raise KeyError("params.yaml has no `energy` section (the table in pJ); add one or remove the energy stage")
    settings = params.energy
    config = settings.config()
    store = params.storage
    base = params.baselines[baseline]
    dense_record, entries = catalog.baseline_models(layout, baseline, params.compare.schemes, params.compare.weight_bits)
    tolerance = params.admm.tolerance_for(baseline)
    threshold = accuracy_threshold(dense_record["val_accuracy"], tolerance)
    components = [f"{c}_pj" for c in energy.COMPONENTS]
    summaries, layer_tables = [], []
    for entry in entries:
        net, _ = training.load_model(entry.checkpoint, base.model)
        layers = energy.model_energy(net, entry.scheme, entry.weight_bits, models.INPUT_SHAPES[base.model],
                                     settings.table_pj, config, store.index_bits, tuple(store.formats))
        tag = {"scheme": entry.scheme, "weight_bits": entry.weight_bits}
        layer_tables.append(layers.assign(**tag))
        stored_bits = int(layers["stored_bits"].sum())
        on_chip = energy.on_chip_components({c: float(layers[f"{c}_pj"].sum()) for c in energy.COMPONENTS},
                                            stored_bits, config)
        summaries.append({**tag, "test_accuracy": entry.test_accuracy, "val_accuracy": entry.val_accuracy,
                          "within_tolerance": entry.val_accuracy >= threshold,
                          "pruning_rate": models.count_weights(net) / max(1, models.count_nonzero_weights(net)),
                          **{c: float(layers[c].sum()) for c in components},
                          "total_nj": float(layers["total_pj"].sum()) / 1000,
                          "stored_kb": stored_bits / 8 / 1024, "fits_on_chip": energy.fits_on_chip(stored_bits, config),
                          "total_nj_on_chip": sum(on_chip.values()) / 1000,
                          "macs": int(layers["macs"].sum()), "fillers": int(layers["fillers"].sum()),
                          "cycles": int(layers["cycles"].sum())})
    models_table = pd.DataFrame(summaries).sort_values(["weight_bits", "total_nj"], ascending=[False, True])
    tables = {"models": models_table, "layers": pd.concat(layer_tables, ignore_index=True)}
    write_tables(layout.write(paths.tables("energy", baseline)), tables)
    lowest = lowest_within_tolerance(models_table, "total_nj")
    lowest_on_chip = lowest_within_tolerance(models_table, "total_nj_on_chip")
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": lowest["scheme"],
        "weight_bits": int(lowest["weight_bits"]),
        "test_accuracy": float(lowest["test_accuracy"]),
        "val_accuracy": float(lowest["val_accuracy"]),
        "pruning_rate": float(lowest["pruning_rate"]),
        "total_nj": float(lowest["total_nj"]),
        "lowest_within_tolerance": bool(lowest["within_tolerance"]),
        "on_chip_kb": config.on_chip_kb,
        "lowest_on_chip": {"scheme": lowest_on_chip["scheme"], "weight_bits": int(lowest_on_chip["weight_bits"]),
                           "total_nj": float(lowest_on_chip["total_nj_on_chip"]),
                           "within_tolerance": bool(lowest_on_chip["within_tolerance"])},
        "models": models_table.to_dict(orient="records"),
    }
    metrics = finish(layout, "energy", baseline, record, clock, ("total_nj",), params.seed,
                     {"energy": settings.model_dump(), "storage": store.model_dump(), "tolerance_pp": tolerance})
    return StageResult(metrics, tables)
