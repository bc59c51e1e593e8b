"""The explorer's whole-model view: every layer of a published compressed model, its stored bits by part and its
energy per inference, as tables T5 and T6 of the report count them (the storage and energy stages' own functions).
"""

from __future__ import annotations

import pandas as pd

from study.core import models
from study.costs import energy, storage


BIT_COLUMNS = ("value bits", "index bits", "filler bits", "pointer bits", "scale, codebook, header bits", "total bits")


def whole_model(net, model_name: str, scheme: str, weight_bits: int, params) -> pd.DataFrame:
    """One row per layer of the stored model (structured: compacted) and a total row: format, bits by part, KB,
    energy per inference with the weights from DRAM and with them on chip (when the whole model fits)."""
    shape = models.INPUT_SHAPES[model_name]
    store, settings = params.storage, params.energy
    bits = storage.model_storage(net, scheme, weight_bits, shape, store.index_bits, store.formats)
    spent = energy.model_energy(net, scheme, weight_bits, shape, settings.table_pj, settings.config(), store.index_bits,
                                tuple(store.formats))
    fits = energy.fits_on_chip(float(bits["total_bits"].sum()), settings.config())
    dram = [f"{c}_pj" for c in energy.DRAM_COMPONENTS]
    table = pd.DataFrame({
        "layer": bits["layer"],
        "format": bits["format"] + bits["index_bits"].map(lambda b: f", {int(b)}-bit runs" if pd.notna(b) else ""),
        "non-zero weights": bits["nonzero"],
        "value bits": bits["values"],
        "index bits": bits["indices"],
        "filler bits": bits["fillers"],
        "pointer bits": bits["pointers"],
        "scale, codebook, header bits": bits["scale"] + bits["codebook"] + bits["header"],
        "total bits": bits["total_bits"],
        "KB": bits["total_bits"] / 8 / 1024,
        "energy, weights from DRAM (nJ)": spent["total_pj"] / 1000,
        "energy, weights on chip (nJ)": (spent["total_pj"] - (spent[dram].sum(axis=1) if fits else 0)) / 1000,
    })
    counts = ["non-zero weights", *BIT_COLUMNS]
    table[counts] = table[counts].astype("int64")  # whole bits: a page must not show 500 bits as "500.000"
    total = table.drop(columns=["layer", "format"]).sum().to_frame().T.assign(layer="total", format="")
    total[counts] = total[counts].astype("int64")
    return pd.concat([table, total[table.columns]], ignore_index=True)
