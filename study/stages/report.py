"""Stage ``report``: every table (CSV, Markdown, LaTeX), figure (PNG, SVG) and verdict of the study.

It reads the results records and tables of the other stages (never re-running a model), writes
``report/tables`` and ``report/figures``, the headline numbers for ``dvc metrics show``
(``metrics/summary.json``) and the plot data for ``dvc plots show`` (``report/plots``), and returns
everything so the report notebook can show it section by section.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from study import paths
from study.core import artifacts, catalog
from study.core.params import Params
from study.report import claims as report_claims
from study.report import common as report
from study.report import compute as report_compute
from study.report import storage as report_storage
from study.report import spread as report_spread
from study.report import weights as report_weights
from study.report.frontier_plot import plot_frontiers
from study.report.uncertainty import Evidence

PUBLISHED = "references/published_results.csv"
RUN_TABLES = "report/run"  # timings and provenance: machine- and commit-dependent, unlike report/tables
MACHINE_NOTE = ("Machine-dependent: read from each stage's metrics file (wall seconds on the machine that ran it, "
                "the code version and packages it ran with); a rerun with the same results changes this table.")
STAGE_TABLES = {"storage": ("models", "ideal", "break-even", "formats"), "energy": ("models",),
                "latency": ("models", "sweep", "crossover"), "evaluate": ("models", "steps"),
                "seeds": ("per_seed", "spread"), "frontier": ("models", "verdicts", "curves", "picks", "methods"),
                "verdicts": ("verdicts", "claims")}


@dataclass
class Report:
    """What the report notebook shows: tables and figures by name, per-baseline sections, verdict texts."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    texts: dict[str, str] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)


def _stage_tables(layout: paths.Layout, stage: str, baseline: str) -> dict[str, pd.DataFrame]:
    folder = layout.read(paths.tables(stage, baseline))
    return {n: _read_table(folder / f"{n}.csv") for n in STAGE_TABLES[stage]}


def _read_table(path: Path) -> pd.DataFrame:
    """A stage's CSV table; one written from an empty table (no rows, no columns) reads back empty."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def summary(baseline_records: list[dict], prune_records: list[dict], storage: dict, energy: dict) -> dict[str, Any]:
    """A few named headline numbers per baseline: what `dvc metrics show` and `dvc exp show` list.

    ``<scheme>_rate`` is the stored rate (after compaction: the fair size of a structured model)."""
    out: dict[str, Any] = {}
    for dense in baseline_records:
        name = report.network_of(dense)
        entry: dict[str, Any] = {"dense_test_accuracy": round(dense["test_accuracy"], 4)}
        for r in prune_records:
            if (r["model"], r["dataset"]) == (dense["model"], dense["dataset"]):
                entry[f"{r['scheme']}_rate"] = round(r["compact_pruning_rate"], 1)
                entry[f"{r['scheme']}_test_accuracy"] = round(r["test_accuracy"], 4)
        if name in storage:
            entry["smallest_within_tolerance_kb"] = round(storage[name]["total_kb"], 2)
        if name in energy:
            entry["lowest_energy_within_tolerance_nj"] = round(energy[name]["total_nj"], 1)
            entry["lowest_energy_on_chip_nj"] = round(energy[name]["lowest_on_chip"]["total_nj"], 1)
        out[name] = entry
    return out


def run(params: Params, layout: paths.Layout, label: str = "") -> Report:
    """Every table, figure and verdict; a ``label`` (e.g. the demo's) is stamped on each of them and on the page."""
    compare = params.compare
    out = Report(baselines=list(compare.baselines), texts={"banner": f"**{label}**" if label else ""})
    tables_dir, figures_dir = layout.write("report/tables"), layout.write("report/figures")
    plots_dir = layout.write("report/plots")
    shutil.rmtree(plots_dir, ignore_errors=True)  # written afresh: a series that no longer exists leaves no stale file
    report.use_style()

    def table(name: str, frame: pd.DataFrame) -> None:
        report.write_table(frame, tables_dir, name, note=label)
        out.tables[name] = frame

    def figure(name: str, fig: plt.Figure) -> None:
        if label:
            report.stamp(fig, label.split(":")[0])
        out.figures[name] = report.save_figure(fig, figures_dir, name)["png"]
        plt.close(fig)

    trained = sorted(params.baselines)
    baseline_records = catalog.records(layout, "train", trained)
    prune_records, quantize_records = [], []
    for baseline in compare.baselines:
        names = catalog.record_names(baseline, compare.schemes, compare.weight_bits)
        prune_records += catalog.records(layout, "prune", names["prune"])
        quantize_records += catalog.records(layout, "quantize", names["quantize"])
    magnitude_records = [catalog.read_record(layout.read(paths.results("magnitude", b))) for b in compare.baselines]
    l1filter_records = [catalog.read_record(layout.read(paths.results("l1filter", b)))
                        for b in compare.baselines if "filter" in compare.schemes]
    asp_records = [catalog.read_record(layout.read(paths.results("prune", paths.item(b, "asp")))) for b in compare.nm_baselines]
    stage_tables = {stage: {b: _stage_tables(layout, stage, b) for b in compare.baselines} for stage in STAGE_TABLES}
    stage_records = {stage: {b: catalog.read_record(layout.read(paths.results(stage, b))) for b in compare.baselines}
                     for stage in ("storage", "energy")}
    published = pd.read_csv(paths.from_root(PUBLISHED))
    # per-image test evidence: 95% intervals and McNemar's p against the dense model, in T2-T6 and the claims
    evidence = Evidence({b: stage_tables["evaluate"][b]["models"] for b in compare.baselines},
                        {b: stage_tables["evaluate"][b]["steps"] for b in compare.baselines})
    dense_by_name = {report.network_of(r): r for r in baseline_records}

    # The paper's claims beside ours, one column of verdicts per network, each computed from the tables below.
    rows: dict[str, list[dict[str, Any]]] = {}
    for baseline in compare.baselines:
        dense = dense_by_name[baseline]
        tolerance = params.admm.tolerance_for(baseline)
        rows[baseline] = []
        if (dense["model"], dense["dataset"]) == ("lenet5", "mnist"):
            # the paper's rate claim is about LeNet-5 on MNIST: judged on that baseline only, with its budget
            irregular = params.prune[baseline]["irregular"]
            rows[baseline].append(report_claims.irregular_rate_claim(
                [r for r in prune_records if report.network_of(r) == baseline], published, tolerance,
                irregular.admm_epochs + irregular.retrain_epochs, evidence=evidence))
        rows[baseline].append(report_claims.binarization_claim(
            [r for r in quantize_records if report.network_of(r) == baseline], dense["test_accuracy"], tolerance,
            evidence))
        # storage and energy: along both frontiers, every model of every schedule, with the bootstrap's probability
        rows[baseline] += report_claims.frontier_claims(stage_tables["verdicts"][baseline]["verdicts"], params.energy.on_chip_kb,
                                                        params.gap.split)
        rows[baseline].append(report_claims.prior_art_claim(stage_tables["frontier"][baseline]["methods"], params.verdicts.confidence))
        rows[baseline].append(report_claims.latency_claim(stage_tables["latency"][baseline]["models"]))
    claims = report_claims.claims_table(rows)
    table("claims", claims)
    out.texts["claims_summary"] = report_claims.claims_summary(claims, compare.baselines)
    sensitivity = report_claims.tolerance_table({b: stage_tables["verdicts"][b]["claims"] for b in compare.baselines},
                                                {b: params.admm.tolerance_for(b) for b in compare.baselines}, params.gap.split,
                                                params.energy.on_chip_kb)
    table("verdicts_by_tolerance", sensitivity)
    out.texts["verdicts_by_tolerance"] = report_claims.tolerance_text(sensitivity, params.gap.split)
    out.texts["nm_cheapest"] = report_claims.nm_cheapest_text({b: stage_tables["verdicts"][b]["verdicts"]
                                                                for b in compare.baselines}, params.gap.split)

    for b in compare.baselines:  # the figure the report opens with
        frontier_tables = stage_tables["frontier"][b]
        figure(f"F0_frontiers_{b}", plot_frontiers(frontier_tables["models"], frontier_tables["curves"], b,
                                                    params.admm.tolerance_for(b), band=params.verdicts.band))
        table(f"verdicts_{b}", stage_tables["verdicts"][b]["verdicts"])
        table(f"step_verdicts_{b}", frontier_tables["verdicts"])
        table(f"picks_{b}", frontier_tables["picks"])

    table("T1_baselines", report.baseline_table(baseline_records))
    picks = {b: stage_tables["frontier"][b]["picks"] for b in compare.baselines}
    table("T2_irregular", report.irregular_table(prune_records + magnitude_records, published, evidence, picks))
    out.texts["admm_vs_magnitude"] = report.admm_against_magnitude(prune_records, magnitude_records)
    t3 = report.structured_table(prune_records + magnitude_records + l1filter_records + asp_records, evidence)
    table("T3_schemes", t3)
    table("T4_quantization", report.quantization_table(quantize_records, evidence))
    if not t3.empty:
        for b in compare.baselines:
            dense = dense_by_name[b]
            rows_b = t3[report.network_column(t3) == b]
            if not rows_b.empty:
                figure(f"F3_accuracy_vs_rate_{b}", report.plot_accuracy_vs_rate(rows_b, dense["test_accuracy"],
                                                                                params.admm.tolerance_for(b)))
        series = report.network_column(t3) + " " + t3["scheme"].astype(str) + " " + t3["method"]
        artifacts.atomic_write_text(plots_dir / "F3.csv", t3.assign(series=series).to_csv(index=False))
    convergence = []
    for record in prune_records:
        if record["scheme"] == "irregular" and record["admm_history"]:
            figure(f"F2_admm_convergence_{report.network_of(record)}", report.plot_admm_convergence(record))
            history = pd.DataFrame(record["admm_history"])
            convergence.append(history.assign(**{"update (all steps)": range(1, len(history) + 1),
                                                 "series": report.network_of(record)}))
    if convergence:
        artifacts.atomic_write_text(plots_dir / "F2.csv", pd.concat(convergence).to_csv(index=False))
    sweeps = []

    for b in compare.baselines:
        weights_dir = layout.read(paths.tables("weights", b))
        masks = report_weights.load_masks(weights_dir / "masks.npz")
        largest = report_weights.largest_layer(masks)
        figure(f"F1_masks_{b}", report_weights.plot_masks(masks, params.report.mask_layer or largest))
        figure(f"F8_weight_distributions_{b}", report_weights.plot_weight_distributions(
            pd.read_csv(weights_dir / "histograms.csv"), params.report.histogram_layer or largest))
        storage_t, energy_t, latency_t = (stage_tables[s][b] for s in ("storage", "energy", "latency"))
        index = layout.read(paths.published(b)) / "index.csv"
        table(f"T5_storage_{b}", report_storage.storage_table(storage_t["models"], evidence, b,
                                                              pd.read_csv(index) if index.is_file() else None))
        iso = report_storage.iso_bits_comparison(storage_t["models"])
        table(f"T5_iso_bits_{b}", iso)
        out.texts[f"storage_verdict_{b}"] = report_storage.storage_verdict(iso, storage_t["ideal"], storage_t["models"])
        table(f"T5_formats_{b}", storage_t["formats"].round({"ideal_index_bits": 0, "efficiency": 3}))
        dense_weights = int(storage_t["models"].query("scheme == 'dense'")["nonzero"].max())
        figure(f"F4_storage_vs_rate_{b}", report_storage.plot_storage_vs_rate(storage_t["models"], dense_weights))
        figure(f"F5_break_even_{b}", report_storage.plot_break_even(storage_t["break-even"]))
        table(f"T6_energy_{b}", report_compute.energy_table(energy_t["models"], evidence, b))
        figure(f"F6_energy_breakdown_{b}", report_compute.plot_energy_breakdown(energy_t["models"], params.energy.on_chip_kb))
        table(f"T7_latency_{b}", report_compute.latency_table(latency_t["models"]))
        figure(f"F7_latency_vs_sparsity_{b}", report_compute.plot_latency_sweep(latency_t["sweep"], latency_t["crossover"]))
        out.tables[f"F7_crossover_{b}"] = latency_t["crossover"]
        out.texts[f"compute_verdict_{b}"] = report_compute.compute_verdict(energy_t["models"], latency_t["models"],
                                                                               params.energy.on_chip_kb)
        seeds_t = stage_tables["seeds"][b]
        table(f"T8_seeds_{b}", seeds_t["spread"].round(3))
        out.texts[f"seeds_verdict_{b}"] = report_spread.spread_verdict(seeds_t["per_seed"], seeds_t["spread"])
        figure(f"F9_seeds_{b}", report_spread.plot_seeds(seeds_t["per_seed"]))
        sweeps.append(latency_t["sweep"].assign(median_us=lambda d: 1e6 * d["median_s"],
                                                series=lambda d: d["layer"] + " " + d["kind"]))
    artifacts.atomic_write_text(plots_dir / "F7.csv", pd.concat(sweeps).drop_duplicates(["series", "sparsity"]).to_csv(index=False))

    metric_files = [layout.read(paths.metrics("train", n)) for n in trained]
    for b in compare.baselines:
        names = catalog.record_names(b, compare.schemes, compare.weight_bits)
        metric_files += [layout.read(paths.metrics(s, n)) for s in ("prune", "quantize") for n in names[s]]
        metric_files += [layout.read(paths.metrics(s, b)) for s in ("magnitude", "evaluate", "storage", "energy", "latency",
                                                                      "seeds")]
        metric_files += [layout.read(paths.metrics("l1filter", b))] if "filter" in compare.schemes else []
        metric_files += [layout.read(paths.metrics("frontier", b))]
    # What the machine and the code version of each run decide, apart from report/tables, which depend on results alone
    # (a rerun that reproduces the results rewrites them byte for byte)
    run_dir = layout.write(RUN_TABLES)
    for name, make in (("timings", report.timing_table), ("provenance", report.provenance_table)):
        frame = make(metric_files, roots=(layout.out, layout.fallback))
        report.write_table(frame, run_dir, name, note=" ".join(filter(None, [label, MACHINE_NOTE])))
        out.tables[name] = frame
    artifacts.write_json(layout.write("metrics/summary.json"),
                         summary(baseline_records, prune_records, stage_records["storage"], stage_records["energy"]))
    return out
