"""Stage ``weights@<baseline>``: the data of F1 and F8.

The zero pattern of every layer of each scheme's selected pruned model (``masks.npz``, boolean arrays in
the GEMM view ``[out, in*kh*kw]``, readable with ``numpy.load(..., allow_pickle=False)``), and histograms
of the non-zero weights of every model on fixed bins per layer (``histograms.csv``).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from study import paths
from study.core import artifacts, catalog, models, training
from study.core.params import Params
from study.costs import encoding
from study.stages.common import StageResult, use_threads

BINS = 241  # fine enough that each quantization level shows as its own spike


def masks_of(loaded: dict[tuple[str, int], object]) -> dict[str, np.ndarray]:
    """``<scheme>/<layer>`` -> kept (True) positions, for each pruned fp32 model."""
    masks = {}
    for (scheme, bits), net in loaded.items():
        if bits == 32 and scheme != "dense":
            for name, layer in models.prunable_layers(net).items():
                masks[f"{scheme}/{name}"] = encoding.as_matrix(layer.weight)[0] != 0
    return masks


def histograms(loaded: dict[tuple[str, int], object], bins: int = BINS) -> pd.DataFrame:
    """Counts of non-zero weights per model and layer on bins shared by all models of a layer (empty bins left out)."""
    rows = []
    layer_names = list(models.prunable_layers(next(iter(loaded.values()))))
    for name in layer_names:
        reach = max(float(models.prunable_layers(net)[name].weight.detach().abs().max()) for net in loaded.values())
        edges = np.linspace(-reach, reach, bins + 1)
        for (scheme, bits), net in loaded.items():
            weights = models.prunable_layers(net)[name].weight.detach().numpy().ravel()
            counts, _ = np.histogram(weights[weights != 0], bins=edges)
            rows += [{"scheme": scheme, "weight_bits": bits, "layer": name, "bin_left": lo, "bin_right": hi, "count": int(c)}
                     for lo, hi, c in zip(edges[:-1], edges[1:], counts) if c]
    return pd.DataFrame(rows)


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    use_threads(params)
    _, entries = catalog.baseline_models(layout, baseline, params.compare.schemes, params.compare.weight_bits)
    loaded = {(e.scheme, e.weight_bits): training.load_model(e.checkpoint)[0] for e in entries}
    out = layout.write(paths.tables("weights", baseline))
    masks = masks_of(loaded)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **masks)
    artifacts.atomic_write_bytes(out / "masks.npz", buffer.getvalue())
    table = histograms(loaded)
    artifacts.atomic_write_text(out / "histograms.csv", table.to_csv(index=False, float_format="%.6g"))
    kept = pd.Series({k: float(v.mean()) for k, v in masks.items()}, name="kept fraction").to_frame()
    counts = table.groupby(["scheme", "weight_bits", "layer"])["count"].sum().unstack("layer")
    return StageResult({}, {"kept": kept, "counts": counts})
