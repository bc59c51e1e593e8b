"""The report's opening figure: both frontiers, every model as a point, a legend that names each thing once."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from study.report.frontier_plot import plot_frontiers, point_label  # noqa: E402


def test_legend_entries_name_each_method_and_scheme_once() -> None:
    assert point_label("ADMM", "filter") == "ADMM filter"
    assert point_label("L1 filter", "filter") == "L1 filter"
    assert point_label("magnitude", "irregular") == "magnitude irregular"
    assert point_label("dense", "dense") == "dense"


def test_the_figure_draws_one_panel_per_cost_and_width_with_every_model_in_its_legend() -> None:
    models = pd.DataFrame([
        {"method": m, "scheme": s, "weight_bits": b, "val_accuracy": a, "storage_kb": kb, "energy_nj": nj}
        for b in (32, 8)
        for m, s, a, kb, nj in (("dense", "dense", 0.99, 100.0, 9e3), ("ADMM", "irregular", 0.989, 20.0, 3e3),
                                ("magnitude", "irregular", 0.988, 25.0, 3e3), ("L1 filter", "filter", 0.988, 40.0, 5e3))])
    curves = pd.DataFrame([
        {"claim": c, "weight_bits": b, "split": "val", "accuracy": a, **{f"{side}{end}": v for side in ("irregular", "structured")
                                                                         for end in ("", "_low", "_high")}}
        for c in ("storage_kb", "energy_nj") for b in (32, 8) for a, v in ((0.99, 100.0), (0.988, 30.0))])
    figure = plot_frontiers(models, curves, "tiny-net", tolerance_pp=0.2)
    assert len(figure.axes) == 4
    legend = {text.get_text() for text in figure.legends[0].get_texts()}
    assert {"dense", "ADMM irregular", "magnitude irregular", "L1 filter", "irregular frontier",
            "structured frontier", "tolerance line (0.2 pp)"} <= legend
