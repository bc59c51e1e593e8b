"""The explorer's whole-model view: every layer of a published compressed model, its stored bits by part and its
energy per inference, as tables T5 and T6 of the report count them (the storage and energy stages' own functions).
"""

from __future__ import annotations

import pandas as pd

from study.core import models
from study.costs import pricing
from study.costs.pricing import BIT_COLUMNS  # noqa: F401  (the explorer's pages name these columns)


def whole_model(net, model_name: str, scheme: str, weight_bits: int, params) -> pd.DataFrame:
    """One row per layer of the stored model (structured: compacted) and a total row (``pricing.price_table``), with
    the study's storage and energy parameters."""
    store, settings = params.storage, params.energy
    return pricing.price_table(net, scheme, weight_bits, models.INPUT_SHAPES[model_name], settings.table_pj,
                               settings.config(), store.index_bits, tuple(store.formats))
