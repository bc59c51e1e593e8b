"""How much the headline models move with the seed: which models to repeat, and the spread over seeds.

Pure functions over records (no torch): the seeds stage picks its models and the report summarizes them here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from study.contract import STRUCTURED_SCHEMES


def headline_models(prune_records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The pruned models the comparison rests on: the selected irregular model, and the structured model of
    the highest compacted rate within tolerance (what structured pruning achieves at the same accuracy).
    Keyed by scheme; a model outside the tolerance is left out (its seeds would measure nothing compared)."""
    records = [r for r in prune_records if r.get("meets_tolerance")]
    chosen: dict[str, Mapping[str, Any]] = {}
    irregular = [r for r in records if r["scheme"] == "irregular"]
    if irregular:
        chosen["irregular"] = irregular[0]
    structured = [r for r in records if r["scheme"] in STRUCTURED_SCHEMES]
    if structured:
        best = max(structured, key=lambda r: (r["compact_pruning_rate"], -STRUCTURED_SCHEMES.index(r["scheme"])))
        chosen[best["scheme"]] = best
    return chosen


def spread_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per model (scheme): over its seeds, the mean, standard deviation, lowest and highest test accuracy (in %),
    the pruning rates, how many seeds kept the model within tolerance, and its accuracy gap to the dense model
    of the same seed (points; negative: below dense)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame()
    dense = frame[frame["scheme"] == "dense"].set_index("seed")["test_accuracy"]
    frame["gap_pp"] = 100 * (frame["test_accuracy"] - frame["seed"].map(dense))
    out = []
    for scheme, group in frame.groupby("scheme", sort=False):
        accuracy = 100 * group["test_accuracy"]
        out.append({
            "scheme": scheme,
            "seeds": len(group),
            "test_mean_pct": accuracy.mean(),
            "test_sd_pp": accuracy.std(ddof=1) if len(group) > 1 else float("nan"),
            "test_min_pct": accuracy.min(),
            "test_max_pct": accuracy.max(),
            "gap_to_dense_mean_pp": group["gap_pp"].mean(),
            "gap_to_dense_min_pp": group["gap_pp"].min(),
            "gap_to_dense_max_pp": group["gap_pp"].max(),
            "rate_min": group["pruning_rate"].min(),
            "rate_max": group["pruning_rate"].max(),
            "within_tolerance": (f"{int(group['meets_tolerance'].fillna(True).astype(bool).sum())}/{len(group)}"),
        })
    return pd.DataFrame(out)


def spread_verdict(per_seed: pd.DataFrame, summary: pd.DataFrame) -> str:
    """One paragraph: the seeds, each model's test range and gap to dense, and whether the accuracy order of the
    irregular and the structured model holds at every seed (the comparison is made at equal accuracy)."""
    if per_seed.empty:
        return "No seed spread: the seeds stage wrote no rows."
    seeds = sorted(per_seed["seed"].unique())
    if len(seeds) < 2:
        return (f"One seed only ({seeds[0]}): add seeds to `spread.seeds` in params.yaml to see how much the models "
                "move with the seed.")
    parts = []
    for row in summary.itertuples():
        text = f"{row.scheme} {row.test_min_pct:.2f}-{row.test_max_pct:.2f}% (sd {row.test_sd_pp:.2f} pp)"
        if row.scheme != "dense":
            text += (f", {row.gap_to_dense_min_pp:+.2f} to {row.gap_to_dense_max_pp:+.2f} pp from the dense model of "
                     f"the same seed, {row.rate_min:.1f}-{row.rate_max:.1f}x, within tolerance at {row.within_tolerance} seeds")
        parts.append(text)
    out = f"Test accuracy over seeds {', '.join(map(str, seeds))}: " + "; ".join(parts) + "."
    pruned = [s for s in summary["scheme"] if s != "dense"]
    if "irregular" in pruned and len(pruned) == 2:
        other = next(s for s in pruned if s != "irregular")
        wide = per_seed.pivot(index="seed", columns="scheme", values="test_accuracy")[["irregular", other]].dropna()
        ahead = int((wide["irregular"] > wide[other]).sum())
        out += (f" The irregular model is ahead of the {other} model at {ahead} of {len(wide)} seeds"
                + (": their accuracy order depends on the seed." if 0 < ahead < len(wide) else "."))
    return out


def plot_seeds(per_seed: pd.DataFrame) -> plt.Figure:
    """Test accuracy of each model at each seed (one marker a seed), the study's own seed drawn larger."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    schemes = list(dict.fromkeys(per_seed["scheme"]))
    first_seed = per_seed["seed"].iloc[0]
    for x, scheme in enumerate(schemes):
        rows = per_seed[per_seed["scheme"] == scheme]
        for row in rows.itertuples():
            own = row.seed == first_seed
            ax.scatter(x, 100 * row.test_accuracy, s=70 if own else 35, marker="o" if own else "D",
                       color=f"C{x}", edgecolor="black", linewidth=0.6, zorder=3)
            ax.annotate(f"seed {row.seed}", (x, 100 * row.test_accuracy), xytext=(8, 0), textcoords="offset points",
                        va="center", fontsize=8)
    ax.set_xticks(range(len(schemes)), schemes)
    ax.set_xlim(-0.5, len(schemes) - 0.2)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("F9 test accuracy per seed (circle: the study's own seed)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
