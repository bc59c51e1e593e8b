"""Stage ``asp@<baseline>``: the N:M schedule's patterns by NVIDIA's ASP recipe (a magnitude N:M mask on the trained
weights, then retraining with it fixed; ``study.compression.asp``) at ADMM's epoch budget: the baseline nobody here
wrote on the N:M side, as magnitude pruning stands beside ADMM's irregular schedule and L1 filter pruning beside its
filter one.

Same patterns (one a step), same layers (``density_weights``), same stop rule, same selection on validation and the
same number of training epochs per step as ``prune@<baseline>-nm``. It exists where ``nm`` is compared.
"""

from __future__ import annotations

import torch

from study import paths
from study.compression import asp, pruning
from study.core.params import Params
from study.stages import rival
from study.stages.common import StageResult


def _prune_to(params: Params, baseline: str, model: torch.nn.Module, rate: float) -> None:
    schedule = params.prune[baseline]["nm"]
    pattern = schedule.patterns[schedule.rates.index(rate)]
    names = None if pruning.ALL_LAYERS in schedule.density_weights else set(schedule.density_weights)
    asp.prune_to_pattern(model, pattern, names)


# its record beside the ADMM N:M schedule's (results/prune/<baseline>/asp.json), which the later stages read already
ASP = rival.Rival(stage="asp", schedule_scheme="nm", method=asp.METHOD, label="ASP", prune_to=_prune_to,
                  record_at=lambda baseline: ("prune", paths.item(baseline, "asp")))


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    return rival.run(ASP, params, layout, baseline)
