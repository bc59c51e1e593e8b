"""Report pieces of the storage stage: table T5 and figures F4 (storage vs rate) and F5 (break-even heatmap).

They read the CSV files that the storage stage writes (``metrics/storage/<baseline>/``), so the report
never re-encodes a model.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm
import numpy as np
import pandas as pd
import seaborn as sns

from study.contract import STRUCTURED_SCHEMES
from study.report.common import model_columns
from study.report.uncertainty import Evidence

KB = 8 * 1024  # bits per kilobyte (1 KB = 1024 bytes)


def published_files(published: pd.DataFrame | None) -> pd.DataFrame:
    """The export stage's files of the dense and the picked models, one per (scheme, weight_bits)."""
    if published is None or published.empty:
        return pd.DataFrame(columns=["scheme", "weight_bits", "file", "stream_bytes", "file_bytes"])
    mine = published[published["why"].str.contains("picked") | (published["scheme"] == "dense")]
    return mine[["scheme", "weight_bits", "file", "stream_bytes", "file_bytes"]].drop_duplicates(["scheme", "weight_bits"])


def storage_table(models_csv: pd.DataFrame, evidence: Evidence | None = None, baseline: str = "",
                  published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table T5: every encoded model, its bits by category, total KB and compression against fp32 dense; with the
    export stage's index (``published``), the file each model was written to: its streams are the computed bits
    rounded up to whole bytes, the rest of the file its header and unpruned tensors."""
    files = published_files(published)
    t = models_csv.merge(files, on=["scheme", "weight_bits"], how="left")
    table = pd.DataFrame({
        **model_columns(t, evidence, baseline),
        "stored rate (x)": t["pruning_rate"].round(1),
        "format": t["formats"],
        "value bits": t["values"],
        "index bits": t["indices"],
        "filler bits": t["fillers"],
        "pointer bits": t["pointers"],
        "codebook / scale + header bits": t["codebook"] + t["scale"] + t["header"],
        "ideal index bits": t["ideal_index_bits"].round(0).astype(int),
        "total (KB)": (t["total_bits"] / KB).round(2),
        "compression vs fp32 dense (x)": t["compression_ratio"].round(1),
        **({"file": t["file"].fillna(""), "file streams (bytes)": t["stream_bytes"].astype("Int64"),
            "file size (bytes)": t["file_bytes"].astype("Int64")} if not files.empty else {}),
    })
    return table.sort_values(["weight bits", "scheme"], ascending=[False, True]).reset_index(drop=True)


def iso_bits_comparison(models_csv: pd.DataFrame) -> pd.DataFrame:
    """Per weight bit width: the irregular model against the smallest structured model within tolerance (or
    the smallest at all where none is); flagged when both are within tolerance, the rows of equal accuracy."""
    rows = []
    for bits, group in models_csv.groupby("weight_bits", sort=False):
        irregular = group[group["scheme"] == "irregular"]
        # the smallest structured model within tolerance; only if none is, the smallest of all (flagged below)
        structured = group[group["scheme"].isin(STRUCTURED_SCHEMES)].assign(
            outside=lambda d: ~d["within_tolerance"].astype(bool)).sort_values(["outside", "total_bits"])
        if irregular.empty or structured.empty:
            continue
        irr, best = irregular.iloc[0], structured.iloc[0]
        rows.append({
            "weight bits": bits,
            "irregular (KB)": round(irr["total_bits"] / KB, 2),
            "irregular test accuracy (%)": round(100 * irr["test_accuracy"], 2),
            "smallest structured": best["scheme"],
            "structured (KB)": round(best["total_bits"] / KB, 2),
            "structured test accuracy (%)": round(100 * best["test_accuracy"], 2),
            "smaller": "structured" if best["total_bits"] < irr["total_bits"] else "irregular",
            "irregular within tolerance": bool(irr["within_tolerance"]),
            "structured within tolerance": bool(best["within_tolerance"]),
            "both within tolerance": bool(irr["within_tolerance"] and best["within_tolerance"]),
            "irregular / structured size": round(irr["total_bits"] / best["total_bits"], 2),
        })
    return pd.DataFrame(rows).sort_values("weight bits", ascending=False).reset_index(drop=True)


def plot_storage_vs_rate(models_csv: pd.DataFrame, dense_weights: int, index_bits: int = 4,
                         weight_bits: tuple[int, ...] = (32, 8, 4, 1)) -> plt.Figure:
    """Figure F4: stored size against pruning rate, with and without index overhead, measured models as points.

    Lines: values only (``N / rate * b_w``: what a structured model pays) and values plus a ``b_idx``-bit
    index per non-zero (the closed-form irregular cost). Points: the real encoded models.
    """
    fig, ax = plt.subplots(figsize=(10, 5.5))
    rates = np.geomspace(1, 1000, 200)
    palette = dict(zip(weight_bits, sns.color_palette("colorblind", len(weight_bits))))
    for bits in weight_bits:
        values_kb = dense_weights / rates * bits / KB
        ax.plot(rates, values_kb, color=palette[bits], linestyle="-", label=f"{bits}-bit values only (structured)")
        ax.plot(rates, values_kb * (bits + index_bits) / bits, color=palette[bits], linestyle="--",
                label=f"{bits}-bit + {index_bits}-bit index (irregular, closed form)")
    markers = {"dense": "s", "irregular": "o", "filter": "^", "channel": "v", "column": "D", "nm": "P"}
    for (scheme, bits), row in models_csv.set_index(["scheme", "weight_bits"]).iterrows():
        if bits not in palette:
            continue
        ax.scatter(row["pruning_rate"], row["total_bits"] / KB, marker=markers.get(scheme, "x"), s=70,
                   color=palette[bits], edgecolors="black", zorder=3)
    for scheme, marker in markers.items():
        if (models_csv["scheme"] == scheme).any():
            ax.scatter([], [], marker=marker, color="white", edgecolors="black", label=f"measured: {scheme}")
    ax.set(xscale="log", yscale="log", xlabel="weight pruning rate (total / stored non-zero weights, log scale)",
           ylabel="stored size (KB, log scale)", title="F4 storage vs pruning rate, with and without index bits")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_break_even(break_even_csv: pd.DataFrame) -> plt.Figure:
    """Figure F5: how many times more irregular pruning must prune to store as little as structured pruning."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    # One logarithmic colour scale for both panels, so equal colours mean equal ratios.
    norm = LogNorm(vmin=1.0, vmax=float(break_even_csv[["closed_form", "measured"]].max().max()))
    for ax, column, title in zip(axes, ["closed_form", "measured"],
                                 ["closed form (b_w + b_idx) / b_w", "measured on the irregular model's masks"]):
        grid = break_even_csv.pivot(index="weight_bits", columns="index_bits", values=column).sort_index(ascending=False)
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="rocket_r", norm=norm, ax=ax,
                    cbar_kws={"label": "break-even rate ratio (x, log colour scale)"})
        ax.set(title=title, xlabel="index bits b_idx (run length per non-zero)", ylabel="weight bits b_w")
    fig.suptitle("F5 break-even: irregular must prune this many times more than structured for equal storage")
    fig.tight_layout()
    return fig


def _tolerance(within: bool) -> str:
    return "within tolerance" if within else "outside tolerance"


def storage_verdict(iso: pd.DataFrame, ideal: pd.DataFrame, models: pd.DataFrame | None = None) -> str:
    """Plain sentences: which scheme stores less at each bit width, at which accuracies (and whether both models
    are within tolerance, i.e. an equal-accuracy comparison), and whether ideal index coding changes it."""
    if iso.empty:
        return "No irregular and structured models of the same bit width to compare."
    lines = []
    for _, row in iso.iterrows():
        equal = "an equal-accuracy comparison" if row["both within tolerance"] else "not an equal-accuracy comparison"
        lines.append(
            f"- {row['weight bits']}-bit weights: irregular {row['irregular (KB)']} KB "
            f"({row['irregular test accuracy (%)']}% test, {_tolerance(row['irregular within tolerance'])}) vs "
            f"{row['smallest structured']} {row['structured (KB)']} KB ({row['structured test accuracy (%)']}% test, "
            f"{_tolerance(row['structured within tolerance'])}): **{row['smaller']}** is smaller; {equal}.")
    wins = ideal[ideal["structured_wins"]]["weight_bits"].tolist()
    scheme = ideal["structured_scheme"].iloc[0] if not ideal.empty else "structured"
    basis = (f"Ideal index coding here means log2 C(n, k) bits per layer on the masks of the fp32 irregular and {scheme} "
             "models; it is the average cost over all masks with k of n weights kept, not a floor for one particular mask.")
    if wins:
        reached = ""
        if models is not None and not models.empty:
            quantized = models[(models["scheme"] == scheme) & models["weight_bits"].isin(wins)]
            reached = "; ".join(f"{int(r.weight_bits)}-bit {100 * r.test_accuracy:.2f}% ({_tolerance(bool(r.within_tolerance))})"
                                for r in quantized.sort_values("weight_bits").itertuples())
        bound = (f"With ideal index coding the {scheme}-pruned model would still store less at b_w in {wins}, "
                 f"keeping the fp32 models' survivors" + (f"; the real {scheme} models at these widths reach {reached} test" if reached
                                                          else "; no real model was quantized to these widths") + ".")
    else:
        bound = (f"With ideal index coding irregular pruning would store less than the {scheme}-pruned model at every "
                 "bit width tried: at the rates reached here its higher rate outweighs the index cost.")
    lines += ["", basis + " " + bound]
    return "\n".join(lines)
