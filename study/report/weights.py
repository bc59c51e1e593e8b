"""Report figures from the weights stage: F1 (the pruning schemes' masks on a real layer) and F8
(weight distributions before and after quantization). Data: ``metrics/weights/<baseline>/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from study.contract import PRUNING_SCHEMES



def load_masks(path: Path | str) -> dict[str, np.ndarray]:
    """The masks the weights stage saved, keyed ``<scheme>/<layer>`` (plain arrays, no pickle)."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def largest_layer(masks: dict[str, np.ndarray]) -> str:
    """The layer with the most weights: what the figures draw when params name no layer (networks whose
    layer names differ, such as ResNet-50 and AlexNet)."""
    sizes = {key.split("/", 1)[1]: array.size for key, array in masks.items()}
    return max(sizes, key=sizes.__getitem__)


def plot_masks(masks: dict[str, np.ndarray], layer: str) -> plt.Figure:
    """Figure F1: which weights each scheme keeps in one layer, as black dots on the GEMM matrix."""
    schemes = [s for s in PRUNING_SCHEMES if f"{s}/{layer}" in masks]
    if not schemes:
        raise KeyError(f"no masks for layer {layer!r}; available: {sorted(masks)}")
    rows, cols = masks[f"{schemes[0]}/{layer}"].shape
    fig, axes = plt.subplots(len(schemes), 1, figsize=(12, 1.2 + 2.6 * len(schemes) * min(1.0, 6 * rows / cols)),
                             squeeze=False)
    for ax, scheme in zip(axes[:, 0], schemes):
        mask = masks[f"{scheme}/{layer}"]
        ax.imshow(mask, cmap="Greys", interpolation="nearest", aspect="auto", vmin=0, vmax=1)
        ax.set(title=f"{scheme}: {mask.mean():.2%} of the weights kept", ylabel="output (filter)")
        ax.grid(False)
    axes[-1, 0].set_xlabel("input channel x kernel position (GEMM column)")
    fig.suptitle(f"F1 kept weights (black) of layer {layer} in each scheme's selected model")
    fig.tight_layout()
    return fig


def plot_weight_distributions(histograms: pd.DataFrame, layer: str, schemes: tuple[str, ...] = ("dense", "irregular"),
                              weight_bits: tuple[int, ...] | None = None) -> plt.Figure:
    """Figure F8: histograms of a layer's non-zero weights, fp32 against each quantized width.

    By default fp32 and the three narrowest widths present: 8-bit levels are too fine to tell from fp32 here.
    """
    data = histograms[histograms["layer"] == layer]
    if weight_bits is None:
        quantized = sorted(set(int(b) for b in data["weight_bits"]) - {32})
        weight_bits = (32, *reversed(quantized[:3]))
    fig, axes = plt.subplots(len(schemes), len(weight_bits), figsize=(4 * len(weight_bits), 3.2 * len(schemes)),
                             sharex=True, squeeze=False)
    for i, scheme in enumerate(schemes):
        for j, bits in enumerate(weight_bits):
            ax = axes[i, j]
            panel = data[(data["scheme"] == scheme) & (data["weight_bits"] == bits)]
            if panel.empty:
                ax.set_axis_off()
                continue
            centres = (panel["bin_left"] + panel["bin_right"]) / 2  # one line per occupied bin: levels show as spikes
            ax.vlines(centres, 0.8, panel["count"], color="C0" if bits == 32 else "C3", linewidth=1.5)
            ax.set(yscale="log", ylim=(0.8, None), title=f"{scheme}, {'fp32' if bits == 32 else f'{bits}-bit'}: "
                                       f"{int(panel['count'].sum()):,} non-zero")
            if j == 0:
                ax.set_ylabel("weights per bin (log)")
            if i == len(schemes) - 1:
                ax.set_xlabel("weight value")
    fig.suptitle(f"F8 distribution of layer {layer}'s non-zero weights before (fp32) and after quantization")
    fig.tight_layout()
    return fig
