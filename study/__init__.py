"""The study's logic, by role.

- ``study.core``: data, models, the training loop, parameters, files (checkpoints, metrics JSON).
- ``study.compression``: the algorithms: constraint sets and projections, ADMM, progressive pruning,
  quantization, compaction of structured models.
- ``study.costs``: what a model costs: bit-exact encodings and storage, the energy model, measured latency.
- ``study.report``: tables, figures and the computed verdicts of the report.
- ``study.stages``: one entry point per DVC stage, ``run(...) -> StageResult``; the notebooks call these.
- ``study.contract``: the study's shared vocabulary: scheme names, bit widths, the tolerance rule, metrics keys.

The public verbs, for the study's models and anyone's (torch is imported only when one is called):

- ``study.price(model, weight_bits=8, input_shape=(3, 32, 32))``: per layer and in total, the bits as stored (values,
  indices, fillers, pointers, scales), KB, the index's information bound and the energy of one inference.
- ``study.compress(model, scheme="irregular", rate=4, weight_bits=8, input_shape=...)``: one-shot pruning and
  quantization, no training.
- ``study.save(model, "m.stm", weight_bits=8, input_shape=...)`` writes those bits as a file;
  ``study.load(path)`` opens a model file the study published as a torch module, ``study.load(path, into=module)``
  one of any architecture into a module built as it was (``study.costs.model_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from typing import Any

    import pandas as pd
    from torch import nn


def load(path: str | Path, into: nn.Module | None = None) -> nn.Module:
    """The torch module in a study model file, with exactly its stored weights (imports torch only when called);
    ``into``: the module to fill, for a file whose architecture is not the study's (``study.save``)."""
    from study.costs.model_file import load as load_model_file

    return load_model_file(path, into)


def save(model: nn.Module, path: str | Path, *, weight_bits: int, input_shape: Sequence[int], scheme: str | None = None,
         index_bits: int | None = None, name: str | None = None, dataset: str = "") -> dict[str, Any]:
    """``model`` as a study model file whose streams are the bits ``price`` counts (``study.api.save``)."""
    from study.api import save as save_model

    return save_model(model, path, weight_bits=weight_bits, input_shape=input_shape, scheme=scheme,
                      index_bits=index_bits, name=name, dataset=dataset)


def price(model: nn.Module, *, weight_bits: int, input_shape: Sequence[int], scheme: str | None = None,
          index_bits: int | None = None, energy_table: Mapping[str, float] | None = None,
          energy_config: Any = None) -> pd.DataFrame:
    """What ``model`` weighs stored at ``weight_bits`` and what one inference costs, per layer and in total
    (``study.api.price``; ``energy_config``: a ``study.costs.energy.EnergyConfig``)."""
    from study.api import price as price_model

    return price_model(model, weight_bits=weight_bits, input_shape=input_shape, scheme=scheme, index_bits=index_bits,
                       energy_table=energy_table, energy_config=energy_config)


def compress(model: nn.Module, *, scheme: str, rate: float, weight_bits: int = 32, input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` pruned to ``rate`` by ``scheme`` and put on ``weight_bits`` levels, one-shot
    (``study.api.compress``)."""
    from study.api import compress as compress_model

    return compress_model(model, scheme=scheme, rate=rate, weight_bits=weight_bits, input_shape=input_shape)
