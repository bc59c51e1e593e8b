"""Stage ``latency@<baseline>``: measured CPU latency of the dense, compacted structured and irregular (CSR)
models (T7), and a sweep of synthetic GEMMs to find where CSR starts beating dense (F7).

All kinds are timed in the same run, alternating, so machine noise hits them alike: read the ratios.
"""

from __future__ import annotations

import pandas as pd

from study import paths
from study.contract import NM_SCHEME, PRUNING_SCHEMES
from study.core import catalog, execution, models, training
from study.core.params import Params
from study.costs import latency, storage
from study.progress import line
from study.stages.common import StageResult, begin, finish, write_tables


def runnable_models(layout: paths.Layout, baseline: str, model_name: str, schemes: list[str]) -> dict[str, tuple]:
    """kind -> (model as it would run, its record): dense; irregular as CSR (and dense, masked); structured compacted."""
    input_shape = models.INPUT_SHAPES[model_name]
    dense_record = catalog.read_record(layout.read(paths.results("train", baseline)))
    dense_net, _ = training.load_model(layout.read(paths.dense_checkpoint(baseline)), model_name)
    runnable = {"dense": (dense_net, dense_record)}
    for record in catalog.records(layout, "prune", catalog.record_names(baseline, schemes, [])["prune"]):
        scheme = record["scheme"]
        net, _ = training.load_model(layout.read(record["selected_checkpoint"]), model_name)
        if scheme == "irregular":  # runs as CSR GEMMs; checked against the masked model first
            csr = latency.to_csr_model(net)
            line(f"irregular CSR model matches the masked model: max |difference| = "
                 f"{latency.check_same_outputs(net, csr, input_shape):.2e}")
            runnable["irregular (CSR)"] = (csr, record)
            runnable["irregular (dense, masked)"] = (net, record)
        else:  # the compacted model is the one that runs: report its rate
            runnable[f"{scheme} (compacted)"] = (storage.storable(net, scheme, input_shape),
                                                 {**record, "pruning_rate": record["compact_pruning_rate"]})
    return runnable


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    if params.latency is None:
        raise KeyError("params.yaml has no `latency` section; add one or remove the latency stage")
    if "irregular" not in params.compare.schemes:
        raise ValueError(f"compare.schemes {params.compare.schemes} lacks 'irregular': the latency stage times its CSR model")
    settings = params.latency
    base = params.baselines[baseline]
    input_shape = models.INPUT_SHAPES[base.model]
    training.seed_everything(params.seed)
    runnable = runnable_models(layout, baseline, base.model, [s for s in PRUNING_SCHEMES if s in params.compare.schemes])
    rows = []
    for batch in settings.batches:
        for kind, (net, record) in runnable.items():
            timing = latency.model_latency(net, input_shape, batch, settings.min_run_time_s, settings.threads)
            rows.append({"kind": kind, "scheme": record["scheme"], "batch": batch, **timing,
                         "test_accuracy": record["test_accuracy"], "pruning_rate": record["pruning_rate"]})
            line(f"batch {batch}: {kind}", median_us=round(1e6 * timing["median_s"], 1))
    if NM_SCHEME in params.compare.schemes:  # no number where there is no kernel: the row says why
        rows += [{"kind": "N:M", "scheme": NM_SCHEME, "batch": batch, "median_s": float("nan"), "note": latency.NM_CPU_NOTE}
                 for batch in settings.batches]
    models_table = pd.DataFrame(rows)
    dense_median = models_table[models_table["kind"] == "dense"].set_index("batch")["median_s"]
    models_table["ratio_to_dense"] = models_table["median_s"] / models_table["batch"].map(dense_median)
    shapes = [(name, *dims) for name, dims in settings.sweep_layers.items()]
    sweep = latency.sparsity_sweep(shapes, settings.sweep_sparsities, settings.min_run_time_s / 2, settings.threads, params.seed)
    crossovers = latency.crossover(sweep)
    tables = {"models": models_table, "sweep": sweep, "crossover": crossovers}
    if NM_SCHEME in params.compare.schemes and execution.current().device.type == "cuda":  # 2:4 on sparse tensor cores
        tables["semi_structured"] = pd.DataFrame([latency.semi_structured_gemm(rows_, cols, inputs, settings.min_run_time_s)
                                                  for rows_, cols, inputs in settings.sweep_layers.values()])
    write_tables(layout.write(paths.tables("latency", baseline)), tables)
    ratios = models_table.dropna(subset=["median_s"]).pivot_table(index="kind", columns="batch", values="ratio_to_dense")
    irregular = runnable["irregular (CSR)"][1]
    record = {
        "model": base.model,
        "dataset": base.dataset,
        "scheme": "irregular",
        "weight_bits": 32,
        "test_accuracy": irregular["test_accuracy"],
        "val_accuracy": irregular["val_accuracy"],
        "pruning_rate": irregular["pruning_rate"],
        "ratio_to_dense": {kind: {str(b): float(v) for b, v in row.items()} for kind, row in ratios.iterrows()},
        # null where CSR never beat dense within the swept sparsities
        "crossover_sparsity": {layer: None if pd.isna(s) else float(s)
                               for layer, s in zip(crossovers["layer"], crossovers["crossover_sparsity"])},
        "threads": settings.threads,
    }
    metrics = finish(layout, "latency", baseline, record, clock, ("threads",), params.seed, {"latency": settings.model_dump()})
    return StageResult(metrics, {**tables, "ratios": ratios.round(3)})
