"""Report pieces of the energy and latency stages: tables T6 / T7, figures F6 / F7, and their verdicts.

They read the CSV files the stages write (``metrics/energy/<baseline>/``, ``metrics/latency/<baseline>/``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.costs.energy import COMPONENTS, DRAM_COMPONENTS
from study.contract import STRUCTURED_SCHEMES
from study.report.common import SCHEME_ORDER, model_columns
from study.report.uncertainty import Evidence

COMPONENT_LABELS = {
    "mac": "MACs", "idle_lanes": "idle lanes", "index_decode": "index decode",
    "sram_weights": "SRAM weights", "sram_index": "SRAM index", "sram_activations": "SRAM activations",
    "dram_weights": "DRAM weights", "dram_index": "DRAM index",
}


def energy_table(models_csv: pd.DataFrame, evidence: Evidence | None = None, baseline: str = "") -> pd.DataFrame:
    """Table T6: energy per inference by component (nJ) for every model, with accuracy and cycles."""
    t = models_csv
    table = pd.DataFrame({
        **model_columns(t, evidence, baseline),
        **{f"{COMPONENT_LABELS[c]} (nJ)": (t[f"{c}_pj"] / 1000).round(1) for c in COMPONENTS},
        "total (nJ)": t["total_nj"].round(1),
        "stored (KB)": t["stored_kb"].round(2),
        "fits on chip": t["fits_on_chip"],
        "total, weights on chip (nJ)": t["total_nj_on_chip"].round(1),
        "MACs": t["macs"],
        "cycles": t["cycles"],
    })
    return table.sort_values(["weight bits", "scheme"], ascending=[False, True]).reset_index(drop=True)


def plot_energy_breakdown(models_csv: pd.DataFrame, on_chip_kb: float, weight_bits: tuple[int, ...] = (32, 8, 4)) -> plt.Figure:
    """Figure F6: stacked energy components per pruned scheme, one panel per weight bit width; top row with
    the weights streamed from DRAM at every inference, bottom row with them on chip where they fit."""
    data = models_csv[(models_csv["scheme"] != "dense") & models_csv["weight_bits"].isin(weight_bits)]
    fig, axes = plt.subplots(2, len(weight_bits), figsize=(5 * len(weight_bits), 9.5), squeeze=False)
    colours = dict(zip(COMPONENTS, sns.color_palette("tab10", len(COMPONENTS))))
    rows = {"weights streamed from DRAM": False, f"weights on chip when they fit {on_chip_kb:g} KB": True}
    for row_axes, (assumption, on_chip) in zip(axes, rows.items()):
        for ax, bits in zip(row_axes, weight_bits):
            panel = data[data["weight_bits"] == bits].copy()
            panel["scheme"] = pd.Categorical(panel["scheme"], SCHEME_ORDER, ordered=True)
            panel = panel.sort_values("scheme")
            bottom = np.zeros(len(panel))
            for component in COMPONENTS:
                values = panel[f"{component}_pj"].to_numpy() / 1000
                if on_chip and component in DRAM_COMPONENTS:
                    values = np.where(panel["fits_on_chip"].to_numpy(dtype=bool), 0.0, values)
                ax.bar(panel["scheme"].astype(str), values, bottom=bottom, color=colours[component],
                       label=COMPONENT_LABELS[component])
                bottom += values
            for x, (total, ok) in enumerate(zip(bottom, panel["within_tolerance"])):
                ax.annotate("" if ok else "below tolerance", (x, total), ha="center", va="bottom", fontsize="x-small")
            ax.set(title=f"{bits}-bit weights, {assumption}", xlabel="pruning scheme", ylabel="energy per inference (nJ)")
            ax.title.set_fontsize("medium")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", title="component")
    fig.suptitle("F6 energy per inference by component (dense baselines in T6: far larger, left out of scale)")
    fig.tight_layout()
    return fig


def latency_table(models_csv: pd.DataFrame) -> pd.DataFrame:
    """Table T7: median and spread of measured latency per model and batch, and the ratio to dense."""
    t = models_csv
    return pd.DataFrame({
        "model": t["kind"],
        "batch": t["batch"],
        "median (us)": (1e6 * t["median_s"]).round(1),
        "IQR (us)": (1e6 * t["iqr_s"]).round(1),
        "min (us)": (1e6 * t["min_s"]).round(1),
        "repeats": t["repeats"],
        "latency / dense": t["ratio_to_dense"].round(2),
        "pruning rate (x)": t["pruning_rate"].round(1),
        "test accuracy (%)": (100 * t["test_accuracy"]).round(2),
        **({"note": t["note"].fillna("")} if "note" in t else {}),  # why a model has no number (N:M on the CPU)
    }).sort_values(["batch", "latency / dense"]).reset_index(drop=True)


def plot_latency_sweep(sweep_csv: pd.DataFrame, crossover_csv: pd.DataFrame) -> plt.Figure:
    """Figure F7: GEMM latency against sparsity, CSR vs dense vs structured, crossover marked, per layer."""
    layers = list(dict.fromkeys(sweep_csv["layer"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4.5), squeeze=False)
    crossing = dict(zip(crossover_csv["layer"], crossover_csv["crossover_sparsity"]))
    for ax, layer in zip(axes[0], layers):
        data = sweep_csv[sweep_csv["layer"] == layer].assign(median_us=lambda d: 1e6 * d["median_s"],
                                                            pruned_pct=lambda d: 100 * d["sparsity"])
        sns.lineplot(data=data, x="pruned_pct", y="median_us", hue="kind", style="kind", markers=True, ax=ax,
                     hue_order=["dense", "csr", "structured"])
        spread = data.assign(low=1e6 * (data["median_s"] - data["iqr_s"] / 2), high=1e6 * (data["median_s"] + data["iqr_s"] / 2))
        for kind, group in spread.groupby("kind"):
            ax.fill_between(group["pruned_pct"], group["low"].clip(lower=1e-3), group["high"], alpha=0.15)
        if not np.isnan(crossing.get(layer, np.nan)):
            ax.axvline(100 * crossing[layer], color="black", linestyle=":", label=f"CSR faster from {100 * crossing[layer]:g}%")
        first = data.iloc[0]
        ax.set(yscale="log", xlabel="weights pruned (%)", ylabel="median latency (us, log scale)",
               title=f"{layer}: {first['rows']}x{first['cols']} x {first['inputs']} columns")
        ax.legend(fontsize="x-small")
    fig.suptitle("F7 measured GEMM latency vs sparsity on this CPU (shaded: interquartile range)")
    fig.tight_layout()
    return fig


def energy_comparison(energy_csv: pd.DataFrame, total: str = "total_nj") -> pd.DataFrame:
    """Per weight bit width, among pruned models within tolerance: irregular against the structured model
    needing least energy, and which of all needs least (bit widths lacking either side are left out).
    ``total``: ``total_nj`` (weights streamed from DRAM) or ``total_nj_on_chip`` (kept on chip if they fit)."""
    rows = []
    for bits, group in energy_csv.groupby("weight_bits", sort=False):
        within = group[group["within_tolerance"] & (group["scheme"] != "dense")]
        irregular = within[within["scheme"] == "irregular"]
        structured = within[within["scheme"].isin(STRUCTURED_SCHEMES)].sort_values(total)
        if irregular.empty or structured.empty:
            continue
        rows.append({"weight_bits": bits, "irregular_nj": irregular.iloc[0][total],
                     "irregular_test_accuracy": irregular.iloc[0].get("test_accuracy", float("nan")),
                     "structured_scheme": structured.iloc[0]["scheme"], "structured_nj": structured.iloc[0][total],
                     "structured_test_accuracy": structured.iloc[0].get("test_accuracy", float("nan")),
                     "lowest": within.sort_values(total).iloc[0]["scheme"]})
    return pd.DataFrame(rows, columns=["weight_bits", "irregular_nj", "irregular_test_accuracy", "structured_scheme",
                                       "structured_nj", "structured_test_accuracy", "lowest"])


def latency_comparison(latency_csv: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the irregular CSR model's latency ratio to dense against the fastest compacted model's."""
    rows = []
    for batch, group in latency_csv.groupby("batch"):
        by_kind = group.set_index("kind")["ratio_to_dense"]
        accuracy = group.set_index("kind")["test_accuracy"] if "test_accuracy" in group else pd.Series(dtype=float)
        structured = by_kind[[k for k in by_kind.index if "compacted" in k]]
        if "irregular (CSR)" in by_kind and not structured.empty:
            rows.append({"batch": batch, "csr_ratio": by_kind["irregular (CSR)"], "structured_kind": structured.idxmin(),
                         "structured_ratio": structured.min(),
                         "csr_test_accuracy": accuracy.get("irregular (CSR)", float("nan")),
                         "structured_test_accuracy": accuracy.get(structured.idxmin(), float("nan"))})
    return pd.DataFrame(rows, columns=["batch", "csr_ratio", "structured_kind", "structured_ratio", "csr_test_accuracy",
                                       "structured_test_accuracy"])


def _accuracy(value: float) -> str:
    return "" if pd.isna(value) else f", {100 * value:.2f}% test"


def compute_verdict(energy_csv: pd.DataFrame, latency_csv: pd.DataFrame, on_chip_kb: float) -> str:
    """Plain sentences: which pruned model needs least energy per bit width under each memory assumption
    (and where keeping the weights on chip changes the answer), and how CSR latency compares."""
    assumptions = {"total_nj": "weights from DRAM", "total_nj_on_chip": f"weights on chip when they fit {on_chip_kb:g} KB"}
    lines = [f"- {r.weight_bits}-bit weights, {label}, both models within tolerance: irregular {r.irregular_nj:.0f} nJ"
             f"{_accuracy(r.irregular_test_accuracy)} vs {r.structured_scheme} {r.structured_nj:.0f} nJ"
             f"{_accuracy(r.structured_test_accuracy)} per inference: **{r.lowest}** needs least energy."
             for total, label in assumptions.items() for r in energy_comparison(energy_csv, total).itertuples()]
    dram, on_chip = (energy_comparison(energy_csv, t).set_index("weight_bits")["lowest"] for t in assumptions)
    for bits in dram.index.intersection(on_chip.index):
        if (dram[bits] == "irregular") != (on_chip[bits] == "irregular"):
            lines.append(f"- At {bits} bits the memory assumption decides: {dram[bits]} needs least energy with the weights "
                         f"read from DRAM, {on_chip[bits]} with them kept on chip.")
    lines += [f"- Batch {r.batch}: irregular as CSR runs at {r.csr_ratio:.2f}x the dense latency{_accuracy(r.csr_test_accuracy)}; "
              f"the fastest structured model ({r.structured_kind}) at {r.structured_ratio:.2f}x{_accuracy(r.structured_test_accuracy)}."
              for r in latency_comparison(latency_csv).itertuples()]
    return "\n".join(lines) if lines else "No pruned models within tolerance to compare."
