"""CSR execution gives the masked model's outputs; timing and the sweep return what the report reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from study.compression import constraints
from study.core import models
from study.costs import latency


def _masked_lenet(keep: float = 0.1) -> nn.Module:
    torch.manual_seed(0)
    model = models.build_model("lenet5")
    with torch.no_grad():
        for layer in models.prunable_layers(model).values():
            k = constraints.keep_count(layer.weight.numel(), keep)
            layer.weight.copy_(constraints.project_pruned(layer.weight, "irregular", k)[0])
    return model


def test_csr_model_gives_the_masked_outputs() -> None:
    model = _masked_lenet()
    csr = latency.to_csr_model(model)
    assert all(isinstance(m, (latency.CSRConv2d, latency.CSRLinear))
               for m in csr.modules() if isinstance(m, (nn.Conv2d, nn.Linear, latency.CSRConv2d, latency.CSRLinear)))
    assert latency.check_same_outputs(model, csr, models.INPUT_SHAPES["lenet5"], batch=5) < 1e-4


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_csr_conv_matches_conv2d_geometry(stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.6)
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(latency.CSRConv2d(conv)(x), conv(x), atol=1e-5)


def test_a_different_model_is_caught() -> None:
    model = _masked_lenet()
    other = latency.to_csr_model(_masked_lenet(0.5))
    with pytest.raises(AssertionError, match="not the masked model"):
        latency.check_same_outputs(model, other, models.INPUT_SHAPES["lenet5"])


def test_timings_and_sweep_have_the_reported_columns() -> None:
    timing = latency.time_call(lambda: sum(range(100)), min_run_time=0.01)
    assert timing["median_s"] > 0 and timing["repeats"] >= 1 and timing["min_s"] <= timing["median_s"]
    sweep = latency.sparsity_sweep([("tiny", 6, 10, 3)], [0.5, 0.9], min_run_time=0.005)
    assert set(sweep["kind"]) == {"dense", "csr", "structured"} and len(sweep) == 6
    assert list(latency.crossover(sweep)["layer"]) == ["tiny"]


def test_crossover_is_where_csr_stays_faster() -> None:
    medians = {"dense": [1.0, 1.0, 1.0, 1.0], "csr": [2.0, 0.9, 1.1, 0.5]}  # faster at 0.7, slower at 0.9
    rows = [{"layer": "l", "sparsity": s, "kind": k, "median_s": v[i]}
            for k, v in medians.items() for i, s in enumerate([0.5, 0.7, 0.9, 0.99])]
    result = latency.crossover(pd.DataFrame(rows)).iloc[0]
    assert result["crossover_sparsity"] == 0.99 and result["csr_speedup_at_max_sparsity"] == pytest.approx(2.0)
    never = pd.DataFrame([{**r, "median_s": 5.0} if r["kind"] == "csr" else r for r in rows])
    assert np.isnan(latency.crossover(never).iloc[0]["crossover_sparsity"])
