"""The study's logic, by role.

- ``study.core``: data, models, the training loop, parameters, files (checkpoints, metrics JSON).
- ``study.compression``: the algorithms: constraint sets and projections, ADMM, progressive pruning,
  quantization, compaction of structured models.
- ``study.costs``: what a model costs: bit-exact encodings and storage, the energy model, measured latency.
- ``study.report``: tables, figures and the computed verdicts of the report.
- ``study.stages``: one entry point per DVC stage, ``run(...) -> StageResult``; the notebooks call these.
- ``study.contract``: the study's shared vocabulary: scheme names, bit widths, the tolerance rule, metrics keys.

``study.load(path)`` opens a model file the study published (``study.costs.model_file``) as a torch module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn


def load(path: str | Path) -> nn.Module:
    """The torch module in a study model file, with exactly its stored weights (imports torch only when called)."""
    from study.costs.model_file import load as load_model_file

    return load_model_file(path)
