"""The figure that opens the report: cost against validation accuracy, both frontiers with their bootstrap bands,
every model as a point (scheme by marker, method by fill), the tolerance line. Data: the frontier stage's tables."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from study.report import frontier as fr

SIDE_COLOURS = {"irregular": "#c44e52", "structured": "#4c72b0", fr.NM_SIDE: "#55a868"}
MARKERS = {"dense": "*", "irregular": "o", "filter": "s", "channel": "^", "column": "D", "nm": "P"}
PANELS = {"storage_kb": ("stored size (KB)", 1.0), "energy_nj": ("energy per inference, weights from DRAM (uJ)", 1e-3)}


def point_label(method: str, scheme: str) -> str:
    """A legend entry that names each thing once: 'ADMM filter', 'L1 filter' (not 'L1 filter filter'), 'dense'."""
    return method if scheme in method.split() or scheme == method else f"{method} {scheme}"


def plot_frontiers(models: pd.DataFrame, curves: pd.DataFrame, network: str, tolerance_pp: float,
                   weight_bits: tuple[int, ...] = (32, 8), band: float = fr.BAND) -> plt.Figure:
    """One row per cost (storage; energy from DRAM), one column per width (those of ``weight_bits`` measured)."""
    widths = [b for b in weight_bits if (models["weight_bits"] == b).any()]
    costs = [c for c in PANELS if c in models]
    fig, axes = plt.subplots(len(costs), len(widths), figsize=(6.5 * len(widths), 4.8 * len(costs)), squeeze=False)
    dense = models[(models["scheme"] == "dense") & (models["weight_bits"] == 32)].iloc[0]
    line = 100 * dense["val_accuracy"] - tolerance_pp
    for row_axes, cost in zip(axes, costs):
        label, scale = PANELS[cost]
        for ax, bits in zip(row_axes, widths):
            curve = curves[(curves["claim"] == cost) & (curves["weight_bits"] == bits) & (curves["split"] == "val")]
            for side in [s for s in SIDE_COLOURS if s in curve]:  # N:M's third frontier where it was priced
                colour = SIDE_COLOURS[side]
                x = 100 * curve["accuracy"]
                ax.step(x, curve[side] * scale, where="post", color=colour, lw=2, label=f"{side} frontier")
                ax.fill_between(x, curve[f"{side}_low"] * scale, curve[f"{side}_high"] * scale, step="post",
                                color=colour, alpha=0.18, lw=0)
            points = models[(models["weight_bits"] == bits) & (models["val_accuracy"] * 100 >= line - 3 * tolerance_pp)]
            for (scheme, method), group in points.groupby(["scheme", "method"], sort=False):
                colour = "black" if scheme == "dense" else SIDE_COLOURS[fr.side_of(scheme)]
                filled = method in ("ADMM", "dense")
                ax.scatter(100 * group["val_accuracy"], group[cost] * scale, marker=MARKERS.get(scheme, "o"), s=36,
                           facecolors=colour if filled else "none", edgecolors=colour, label=point_label(method, scheme), zorder=3)
            ax.axvline(line, color="grey", ls="--", lw=1, label=f"tolerance line ({tolerance_pp:g} pp)")
            ax.set(yscale="log", xlabel="validation accuracy (%)", ylabel=label, title=f"{network}, {bits}-bit weights")
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
               title="filled: ADMM (and dense)\nhollow: magnitude / L1 filter")
    fig.suptitle(f"Frontiers of {network}: the cheapest model at or above each validation accuracy, "
                 f"shaded: {100 * band:g}% bootstrap band")
    fig.tight_layout()
    return fig
