"""The explorer's four views of one choice: the mask, the weights before and after quantization, where the
stored bits go, and where the energy goes. One matplotlib figure, redrawn on every change."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from study.compression import constraints
from study.explore.layer import STORAGE_PARTS

ENERGY_LABELS = {"mac": "MACs", "idle_lanes": "idle lanes", "index_decode": "index decode",
                 "sram_weights": "SRAM weights", "sram_index": "SRAM index", "sram_activations": "SRAM activations",
                 "dram_weights": "DRAM weights", "dram_index": "DRAM index"}
PART_COLORS = {"values": "#4c72b0", "indices": "#dd8452", "fillers": "#c44e52", "pointers": "#8172b3",
               "scale": "#da8bc3", "codebook": "#937860", "header": "#8c8c8c"}


def title(view: dict[str, Any]) -> str:
    choice = view["choice"]
    bits = "fp32" if choice.weight_bits == 32 else f"{choice.weight_bits}-bit"
    return f"{choice.layer}: {choice.scheme} at {choice.rate:.3g}x, {bits} weights"


def draw_mask(ax: plt.Axes, view: dict[str, Any]) -> None:
    mask = constraints.gemm_view(view["mask"]).cpu().numpy()
    ax.imshow(~mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_title(f"Kept weights (black): {int(mask.sum()):,} of {mask.size:,}")
    ax.set_xlabel("input (channel x kernel position)")
    ax.set_ylabel("output (filter)")


def draw_histogram(ax: plt.Axes, view: dict[str, Any]) -> None:
    dense = view["dense"].flatten().cpu().numpy()
    quantized = view["quantized"].flatten().cpu().numpy()
    survivors = quantized[quantized != 0]
    edges = np.linspace(float(dense.min()), float(dense.max()), 81)
    ax.hist(dense, bins=edges, color="#bbbbbb", label="dense (before pruning)")
    ax.hist(survivors, bins=edges, color="#4c72b0", alpha=0.85, label="stored (pruned, quantized)")
    ax.set_yscale("log")
    ax.set_title(f"Weights: {len(np.unique(survivors))} distinct stored values")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (log)")
    ax.legend(loc="upper right", fontsize=8)


def draw_storage(ax: plt.Axes, view: dict[str, Any]) -> None:
    row = view["storage"]
    left = 0.0
    for part in STORAGE_PARTS:
        kb = row[part] / 8000
        ax.barh(["stored"], [kb], left=left, color=PART_COLORS[part], label=part)
        left += kb
    ideal = (row["values"] + row["ideal_index_bits"]) / 8000
    ax.barh(["values +\nlog2 C(n,k)"], [row["values"] / 8000], color=PART_COLORS["values"])
    ax.barh(["values +\nlog2 C(n,k)"], [ideal - row["values"] / 8000], left=row["values"] / 8000, color="#dddddd",
            hatch="//", edgecolor="#888888")
    fmt = row["format"] + (f", {row['index_bits']}-bit runs" if row.get("index_bits") else "")
    ax.set_title(f"Storage: {row['total_bits'] / 8000:.2f} KB ({fmt})")
    ax.set_xlabel("kilobytes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, ncol=6, frameon=False)


def draw_energy(ax: plt.Axes, view: dict[str, Any]) -> None:
    energy = {k: v for k, v in view["energy_pj"].items()}
    names = list(ENERGY_LABELS)
    values = [energy[n] / 1000 for n in names]
    ax.barh([ENERGY_LABELS[n] for n in names], values, color="#55a868")
    ax.invert_yaxis()
    ax.set_title(f"Energy per inference: {sum(values):.2f} nJ")
    ax.set_xlabel("nanojoules")


def layer_figure(view: dict[str, Any]) -> plt.Figure:
    """The four panels for one choice, titled with the choice and the one-shot validation accuracy."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), constrained_layout=True)
    draw_mask(axes[0, 0], view)
    draw_histogram(axes[0, 1], view)
    draw_storage(axes[1, 0], view)
    draw_energy(axes[1, 1], view)
    accuracy = view.get("val_accuracy")
    suffix = f"   |   validation accuracy {100 * accuracy:.2f}% (unchanged model {100 * view['baseline_val_accuracy']:.2f}%)" \
        if accuracy is not None else ""
    fig.suptitle(title(view) + suffix, fontsize=12)
    return fig


MODEL_PARTS = {"value bits": "values", "index bits": "indices", "filler bits": "fillers", "pointer bits": "pointers",
               "scale, codebook, header bits": "scale"}


def where_bits_go(table: Any, title_text: str = "") -> plt.Figure:
    """Stacked bars of one priced model (a ``study.price`` table): per layer, its stored KB by part, so that the
    index, filler and pointer bits irregular sparsity pays show beside the values they locate."""
    layers = table[table["layer"] != "total"]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(layers) + 1.6))
    left = np.zeros(len(layers))
    for column, part in MODEL_PARTS.items():
        kb = layers[column].to_numpy(dtype=float) / 8 / 1024
        ax.barh(layers["layer"], kb, left=left, color=PART_COLORS[part], label=column.replace(" bits", ""))
        left += kb
    ax.invert_yaxis()
    ax.set_xlabel("stored KB (1 KB = 1,024 bytes)")
    total = table[table["layer"] == "total"].iloc[0]
    ax.set_title(title_text or f"{total['KB']:,.1f} KB stored, {total['index bits'] + total['filler bits'] + total['pointer bits']:,} "
                                f"bits locating {total['non-zero weights']:,} weights")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()), ncol=len(MODEL_PARTS), fontsize="small",
              frameon=False)
    fig.tight_layout()
    return fig
