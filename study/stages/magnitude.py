"""Stage ``magnitude@<baseline>``: the irregular schedule's rates by iterative global magnitude pruning
(``torch.nn.utils.prune``) with masked retraining at ADMM's epoch budget: the baseline ADMM must beat.

Same rates, same stop rule, same selection on validation and the same number of training epochs per step
as ``prune@<baseline>-irregular`` (ADMM epochs + retraining epochs, all spent retraining here). Rows of
T2 and T3, a line of F3, and models of the irregular frontier in the report.
"""

from __future__ import annotations

from study import paths
from study.compression import magnitude
from study.core.params import Params
from study.stages import rival
from study.stages.common import StageResult

METHOD = "iterative global magnitude pruning (Han et al. 2015; torch.nn.utils.prune)"
MAGNITUDE = rival.Rival(stage="magnitude", schedule_scheme="irregular", method=METHOD, label="magnitude",
                        prune_to=lambda params, baseline, model, rate: magnitude.prune_globally_to_rate(model, rate))


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    return rival.run(MAGNITUDE, params, layout, baseline)
