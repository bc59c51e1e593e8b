"""Stage ``l1filter@<baseline>``: the filter schedule's rates by L1-norm filter pruning (``prune.ln_structured``)
with masked retraining at ADMM's epoch budget: the structured baseline ADMM must beat, and a second method on
the structured side of every frontier.

Same rates, same per-layer split (``density_weights``), same stop rule, same selection on validation and the
same number of training epochs per step as ``prune@<baseline>-filter`` (ADMM epochs + retraining epochs, all
spent retraining here). A network whose channels residual sums or batch norm join gets a record with no steps
and the reason.
"""

from __future__ import annotations

import torch

from study import paths
from study.compression import compaction, coupling, l1_filter
from study.core import models
from study.core.params import Params
from study.stages import rival
from study.stages.common import StageResult

NOT_APPLICABLE = ("the network joins channels (residual sums or batch norm): ln_structured prunes one layer at a time, "
                  "so the L1 filter baseline runs on plain chains only")


def _prune_to(params: Params, baseline: str, model: torch.nn.Module, rate: float) -> None:
    schedule = params.prune[baseline]["filter"]
    l1_filter.prune_filters_to_rate(model, rate, schedule.density_weights, models.INPUT_SHAPES[params.baselines[baseline].model])


def _compact_rate(model: torch.nn.Module, model_name: str) -> dict[str, float]:
    """The fair size of a structured model is its compacted one (dead filters and what reads them removed)."""
    compact, _ = compaction.compact(model, models.INPUT_SHAPES[model_name])
    return {"compact_pruning_rate": models.count_weights(model) / models.count_nonzero_weights(compact)}


L1_FILTER = rival.Rival(stage="l1filter", schedule_scheme="filter", method=l1_filter.METHOD, label="L1 filter",
                        prune_to=_prune_to, step_extra=_compact_rate, record_keys=("compact_pruning_rate",),
                        not_applicable=lambda model: NOT_APPLICABLE if coupling.uses_spaces(model, "filter") else None)


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    return rival.run(L1_FILTER, params, layout, baseline)
