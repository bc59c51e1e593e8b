"""A baseline nobody here wrote, for N:M sparsity: NVIDIA's ASP recipe (Mishra et al., "Accelerating Sparse Deep
Neural Networks", arXiv 2104.08378; apex.contrib.sparsity): an N:M magnitude mask on the trained weights, then
retraining with the mask fixed.

ASP groups a conv weight's M consecutive input channels at each (kernel position, filter), as
``study.compression.nm`` does (apex permutes [out, in, kh, kw] to [kh, kw, out, in] before cutting rows of M), and
keeps the N largest magnitudes of each group, which is the N:M projection. Masks live in ``torch.nn.utils.prune``'s
parametrization like the magnitude baseline's, so ``study.compression.magnitude.run_schedule`` retrains with them
fixed; a later, sparser pattern (2:4, then 1:4, then 1:8) prunes among the survivors only.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.nn.utils import prune

from study.compression import nm
from study.contract import nm_pattern
from study.core import models


METHOD = "magnitude N:M then retraining (NVIDIA ASP; Mishra et al. 2021, arXiv 2104.08378)"


def prune_to_pattern(model: nn.Module, pattern: str, layers: Collection[str] | None = None) -> dict[str, bool]:
    """Add the ``pattern`` magnitude mask to every conv and FC layer it applies to (of ``layers``, where given),
    composing with earlier masks; the others (a reduction length that is not a multiple of M) stay as they are.
    Returns which layers it pruned."""
    _, m = nm_pattern(pattern)
    pruned = {}
    for name, layer in models.prunable_layers(model).items():
        pruned[name] = nm.applies(layer.weight, m) and (layers is None or name in layers)
        if pruned[name]:
            with torch.no_grad():
                _, mask = nm.project(layer.weight.detach(), pattern)  # the masked weight: earlier zeros stay zero
            prune.custom_from_mask(layer, "weight", mask)
    return pruned
