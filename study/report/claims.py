"""The paper's claims beside our results, each with a plain verdict computed from the stage outputs.

Each function returns one row: the claim, the published figure, ours, and one of four verdicts:

- *holds*;
- *does not hold*: compared at equal accuracy (both models within the tolerance) and equal bits;
- *not reproduced at this budget*: our run falls short, but it trained far less than the published one,
  so it neither confirms nor refutes the claim (the row states both budgets); for a frontier claim, a width at
  which no pruned model of either side stays within tolerance;
- *not measured*: the evidence is missing (a stage not run, or no pair of models within tolerance);

and for the claims judged along frontiers (storage, energy) a fifth, *undecided at this budget*: the cost gap between
the sides at the tolerance line, with training-seed and image noise inside its interval, is not decided by Holm's rule
over the claim's widths on the test images (``study.report.gap``, stage ``verdicts``).

Published numbers come only from ``references/published_results.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from study.report import frontier
from study.report.common import network_of
from study.report.compute import latency_comparison
from study.report.uncertainty import Evidence

PAPER = "Wang, Ye, He, Ma et al., arXiv 1907.02124"


HOLDS, DOES_NOT_HOLD, NOT_MEASURED = "holds", "does not hold", "not measured"
NOT_AT_BUDGET = frontier.NOT_AT_BUDGET  # also where no side has a pruned model within a frontier claim's line
UNDECIDED = frontier.UNDECIDED  # a frontier verdict the cost gap does not settle (see frontier_claims)
VERDICTS = (HOLDS, DOES_NOT_HOLD, UNDECIDED, NOT_AT_BUDGET, NOT_MEASURED)
PROBABILITY = "P(claimed side ahead)"  # per network: structured cheaper, N:M cheaper (its rows), ADMM higher (prior art)


def _row(claim: str, published: str, ours: str, holds: bool | str | None) -> dict[str, Any]:
    verdict = holds if isinstance(holds, str) else {True: HOLDS, False: DOES_NOT_HOLD, None: NOT_MEASURED}[holds]
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}; one of {list(VERDICTS)}")
    return {"claim": claim, "published": published, "ours": ours, "at our scale": verdict}


def published_entry(published: pd.DataFrame, model: str, dataset: str, method: str) -> pd.Series | None:
    """The references row of ``method`` on ``model``/``dataset`` (irregular pruning), or None."""
    rows = published[(published["model"] == model) & (published["dataset"] == dataset)
                     & (published["method"] == method) & (published["scheme"] == "irregular")]
    return rows.iloc[0] if not rows.empty else None


def published_budget(published: pd.DataFrame, model: str, dataset: str) -> pd.Series | None:
    """The references row that states a published ADMM training budget (epochs per pruning target), or None."""
    if "epochs_per_target" not in published:
        return None
    rows = published[(published["model"] == model) & (published["dataset"] == dataset) & published["epochs_per_target"].notna()]
    return rows.iloc[0] if not rows.empty else None


def irregular_rate_claim(prune_records: Iterable[dict], published: pd.DataFrame, tolerance_pp: float,
                         epochs_per_step: int, model: str = "lenet5", dataset: str = "mnist",
                         evidence: Evidence | None = None) -> dict[str, Any]:
    """ADMM-NN-S's irregular rate on LeNet-5/MNIST against our selected irregular model of the same pair.

    Holds when our rate reaches the published one within the accuracy tolerance; when it falls short after
    far fewer epochs per pruning target than the published code spends, it is not reproduced at this budget."""
    entry = published_entry(published, model, dataset, "ADMM-NN-S")
    rate = float(entry["pruning_rate"]) if entry is not None else float("nan")
    claim = f"ADMM-NN-S prunes LeNet-5 non-structured ~{rate:g}x without accuracy loss"
    record = next((r for r in prune_records if r["scheme"] == "irregular" and (r["model"], r["dataset"]) == (model, dataset)), None)
    if record is None or entry is None:
        return _row(claim, f"{rate:g}x", "-", None)
    loss = 100 * (record["baseline_test_accuracy"] - record["test_accuracy"])
    ours = (f"{record['pruning_rate']:.0f}x at {100 * record['test_accuracy']:.2f}% test "
            f"({abs(loss):.2f} pp {'below' if loss >= 0 else 'above'} the dense {100 * record['baseline_test_accuracy']:.2f}%; "
            f"tolerance {tolerance_pp:g} pp)")
    measured = (evidence or Evidence()).describe(f"{model}-{dataset}", "irregular", 32, record["test_accuracy"])
    ours += f"; {measured}" if measured else ""
    if record["pruning_rate"] >= rate and loss <= tolerance_pp:
        return _row(claim, f"{rate:g}x", ours, True)
    budget = published_budget(published, model, dataset)
    if budget is not None and epochs_per_step < float(budget["epochs_per_target"]):
        ours += (f"; {epochs_per_step} epochs per pruning step here against {float(budget['epochs_per_target']):.0f} per target "
                 f"in the published ADMM code ({budget['budget_source']})")
        return _row(claim, f"{rate:g}x", ours, NOT_AT_BUDGET)
    return _row(claim, f"{rate:g}x", ours, False)


def binarization_claim(quantize_records: Iterable[dict], baseline_test_accuracy: float, tolerance_pp: float,
                       evidence: Evidence | None = None) -> dict[str, Any]:
    record = next((r for r in quantize_records if r["scheme"] == "dense" and r["weight_bits"] == 1), None)
    claim = "A fully binarized network (every layer's weights binary) loses no accuracy"
    if record is None:
        return _row(claim, "lossless", "-", None)
    loss = 100 * (baseline_test_accuracy - record["test_accuracy"])
    measured = evidence.describe(network_of(record), "dense", 1, record["test_accuracy"]) if evidence else ""
    return _row(claim, "lossless", f"{100 * record['test_accuracy']:.2f}% test ({abs(loss):.2f} pp "
                                   f"{'below' if loss >= 0 else 'above'} dense fp32{'; ' + measured if measured else ''})",
                loss <= tolerance_pp)


def latency_claim(latency_models: pd.DataFrame) -> dict[str, Any]:
    claim = "Irregular sparsity brings little real speedup; structured pruning does"
    compared = latency_comparison(latency_models)
    if compared.empty:
        return _row(claim, "structured faster", "-", None)
    parts = [f"batch {r.batch}: CSR {r.csr_ratio:.2f}x dense, best structured {r.structured_ratio:.2f}x"
             for r in compared.itertuples()]
    holds = bool((compared["structured_ratio"] < compared["csr_ratio"]).all())
    return _row(claim, "structured faster", "; ".join(parts), holds)


FRONTIER_CLAIMS = {
    "storage_kb": ("With quantized weights, structured pruning stores less than irregular pruning (index bits included)",
                   "structured smaller", "KB", True),
    "energy_nj": ("At the same accuracy and bits, structured pruning needs less energy per inference than irregular "
                  "(weights read from DRAM at every inference)", "structured lower", "nJ", False),
    "energy_on_chip_nj": ("At the same accuracy and bits, structured pruning needs less energy per inference than irregular "
                          "(weights on chip when they fit {on_chip_kb:g} KB)", "structured lower", "nJ", False),
}


def prior_art_claim(methods: pd.DataFrame, confidence: float = frontier.CONFIDENCE) -> dict[str, Any]:
    """The abstract's "ADMM-NN-S consistently outperforms the prior art", at equal epochs per step: per scheme with a
    baseline nobody here wrote (magnitude pruning for irregular, L1 filter pruning for filter), ADMM's rate at the
    tolerance line against the rival's on the validation bootstrap (the frontier stage's ``methods.csv``).
    Holds where ADMM reaches further with ``confidence`` for every scheme; does not hold where a rival does for any."""
    claim = "ADMM-NN-S outperforms the prior art (higher pruning rate at the same accuracy, equal epochs)"
    if methods.empty:
        return _row(claim, "ADMM higher", "-", None) | {PROBABILITY: ""}
    parts = [f"{r.scheme}: ADMM {r.admm_rate_at_line:.3g}x vs {r.rival} {r.rival_rate_at_line:.3g}x at the line "
             f"(P(ADMM higher) = {r.p_admm_higher:.2f}, equal {r.p_equal:.2f})" for r in methods.itertuples()]
    if (methods["p_rival_higher"] >= confidence).any():
        verdict = DOES_NOT_HOLD
    elif (methods["p_admm_higher"] >= confidence).all():
        verdict = HOLDS
    else:
        verdict = UNDECIDED
    probability = ", ".join(f"{r.scheme} {r.p_admm_higher:.2f}" for r in methods.itertuples())
    return _row(claim, "ADMM higher", "; ".join(parts), verdict) | {PROBABILITY: f"P(ADMM higher): {probability}"}


def combined_verdict(per_width: list[str]) -> str:
    """A claim over several widths: holds where it holds at every one, does not hold where it fails at any one,
    else undecided. Widths that compared nothing do not count: where no width compared pruned models, not
    reproduced at this budget (no pruned model within tolerance) or not measured (no evidence)."""
    measured = [v for v in per_width if v not in (NOT_MEASURED, NOT_AT_BUDGET)]
    if not measured:
        return NOT_AT_BUDGET if NOT_AT_BUDGET in per_width else NOT_MEASURED
    if DOES_NOT_HOLD in measured:
        return DOES_NOT_HOLD
    return HOLDS if all(v == HOLDS for v in measured) else UNDECIDED


SIDE_NAMES = {"irregular": "irregular", "structured": "structured", "nm": "N:M"}
# N:M (semi-structured) against each side: the same three costs, one row per comparison, where N:M models are priced
NM_CLAIMS = {"storage_kb": ("With quantized weights, N:M semi-structured pruning stores less than {base} pruning (index "
                            "and metadata bits included)", "KB", True),
             "energy_nj": ("At the same accuracy and bits, N:M pruning needs less energy per inference than {base} "
                           "(weights read from DRAM at every inference)", "nJ", False),
             "energy_on_chip_nj": ("At the same accuracy and bits, N:M pruning needs less energy per inference than {base} "
                                   "(weights on chip when they fit {on_chip_kb:g} KB)", "nJ", False)}


def _ratio(value: float, base: str = "irregular", challenger: str = "structured") -> str:
    """A cost ratio as text: '1.35x'; a side that never reaches the line reads as such, not as inf or nan."""
    if np.isnan(value):
        return "-"
    return (f"no {SIDE_NAMES[base]} model" if np.isinf(value) else f"no {SIDE_NAMES[challenger]} model" if value == 0
            else f"{value:.2f}x")


def _comparison(verdicts: pd.DataFrame, pair: tuple[str, str], claim: str, quantized_only: bool, split: str,
                unit: str) -> tuple[str, str, str] | None:
    """One claim of one comparison at the study's tolerance: (our text, the combined verdict, the probabilities), or
    None where the verdicts stage has no row for it."""
    if verdicts.empty:
        return None
    base, challenger = pair
    mine = verdicts[(verdicts["base"] == base) & (verdicts["challenger"] == challenger) & (verdicts["claim"] == claim)
                    & (verdicts["tolerance_factor"] == 1.0)]
    if quantized_only:
        mine = mine[mine["weight_bits"] < 32]
    decided = mine[mine["split"] == split]
    if decided.empty:
        return None
    other_split = next(s for s in ("val", "test") if s != split)
    other = mine[mine["split"] == other_split].set_index("weight_bits")
    parts, probabilities = [], []
    for r in decided.sort_values("weight_bits", ascending=False).itertuples():
        beside = f"; {other_split} {other.loc[r.weight_bits, 'p_cheaper']:.2f}" if r.weight_bits in other.index else ""
        if r.verdict == NOT_AT_BUDGET:
            parts.append(f"{r.weight_bits}-bit: {NOT_AT_BUDGET}: no pruned model on either side is within tolerance")
            probabilities.append(f"{r.weight_bits}-bit none within")
            continue
        notes = [f"seed noise {r.seed_share:.0%} of the interval"] if not np.isnan(r.seed_share) else []
        if bool(r.near_cut):
            notes.append("within 3 Monte Carlo errors of its cut")
        if r.verdict_check_seed != r.verdict:
            notes.append(f"another bootstrap seed: {r.verdict_check_seed}")
        ratio = lambda v: _ratio(v, base, challenger)  # noqa: E731
        parts.append(f"{r.weight_bits}-bit: {r.verdict} (P = {r.p_cheaper:.3f} ± {r.mc_error:.3f}{beside}); "
                     f"{SIDE_NAMES[challenger]} / {SIDE_NAMES[base]} {ratio(r.ratio)} [{ratio(r.ratio_low)}, "
                     f"{ratio(r.ratio_high)}] at the line ({r.challenger_cost:.4g} vs {r.base_cost:.4g} {unit}), "
                     f"{ratio(r.band_ratio)} over the band" + "".join(f"; {n}" for n in notes))
        probabilities.append(f"{r.weight_bits}-bit {r.p_cheaper:.3f}")
    return " | ".join(parts), combined_verdict(list(decided["verdict"])), ", ".join(probabilities)


def frontier_claims(verdicts: pd.DataFrame, on_chip_kb: float, split: str = "test") -> list[dict[str, Any]]:
    """The storage and energy claims from the verdicts stage's table (``results/verdicts/<baseline>/verdicts.csv``):
    per width, at the study's tolerance, the Holm verdict on ``split`` with its probability and Monte Carlo error, the
    other split's probability beside it, the cost ratio structured / irregular at the line with its interval and over
    the band below dense, and the share of the interval the training-seed noise adds; a verdict near its cut, or one
    a second bootstrap seed turns, says so. The claim combines its widths (``combined_verdict``). Where N:M models
    were priced too, one row per claim for N:M against each side follows (``PROBABILITY``: that N:M is cheaper)."""
    rows = []
    for claim, (text, published, unit, quantized_only) in FRONTIER_CLAIMS.items():
        found = _comparison(verdicts, frontier.SIDES, claim, quantized_only, split, unit)
        text = text.format(on_chip_kb=on_chip_kb)
        if found is None:
            rows.append(_row(text, published, "-", None) | {PROBABILITY: ""})
            continue
        ours, verdict, probabilities = found
        rows.append(_row(text, published, ours, verdict) | {PROBABILITY: probabilities})
    for base in frontier.SIDES:
        for claim, (text, unit, quantized_only) in NM_CLAIMS.items():
            found = _comparison(verdicts, (base, frontier.NM_SIDE), claim, quantized_only, split, unit)
            if found is not None:
                ours, verdict, probabilities = found
                rows.append(_row(text.format(base=base, on_chip_kb=on_chip_kb), "(not in the paper)", ours, verdict)
                            | {PROBABILITY: probabilities})
    return rows


SHORT_CLAIMS = {"storage_kb": "storage", "energy_nj": "energy, weights from DRAM", "energy_on_chip_nj": "energy, weights on chip"}


def tolerance_table(claims_by_network: dict[str, pd.DataFrame], tolerance_pp: dict[str, float], split: str,
                    on_chip_kb: float) -> pd.DataFrame:
    """Each claim's combined verdict per network and comparison at every tolerance factor the verdicts stage drew (the
    stage's ``claims.csv``, read on ``split``): whether the conclusion outlasts a stricter or a looser tolerance."""
    rows = []
    for network, table in claims_by_network.items():
        if table.empty:
            continue
        mine = table[table["split"] == split]
        for (base, challenger, claim), group in mine.groupby(["base", "challenger", "claim"], sort=False):
            short = SHORT_CLAIMS.get(claim, claim).replace("on chip", f"on chip ({on_chip_kb:g} KB)")
            row = {"network": network, "claim": short if (base, challenger) == frontier.SIDES
                   else f"{short}: {SIDE_NAMES[challenger]} against {SIDE_NAMES[base]}"}
            for r in group.sort_values("tolerance_factor").itertuples():
                row[f"{r.tolerance_factor:g}x tolerance"] = f"{r.verdict} ({r.tolerance_factor * tolerance_pp[network]:g} pp)"
            rows.append(row)
    return pd.DataFrame(rows)


def tolerance_text(table: pd.DataFrame, split: str) -> str:
    """One Markdown paragraph for the report's opening: how many claims keep their verdict at every tolerance."""
    if table.empty:
        return "No verdicts: the verdicts stage wrote no table."
    columns = [c for c in table.columns if c.endswith("x tolerance")]
    verdicts = table[columns].apply(lambda col: col.str.replace(r" \(.*\)$", "", regex=True))
    steady = int((verdicts.nunique(axis=1) == 1).sum())
    return (f"Read on the {split} images, which no choice of model saw: {steady} of {len(table)} claim verdicts (network by "
            f"network) are the same at {', '.join(c.split(' ')[0] for c in columns)} the tolerance; the table below "
            "says which move and where.")


def nm_cheapest_text(verdicts_by_network: dict[str, pd.DataFrame], split: str) -> str:
    """Where N:M was priced: at which claims and widths its fitted cost at the line is the lowest of the three sides
    (below both irregular and structured on all images), with the probability of each of the two comparisons; ""
    where no network priced N:M."""
    parts = []
    for network, table in verdicts_by_network.items():
        if table.empty or "challenger" not in table or not (table["challenger"] == "nm").any():
            continue
        mine = table[(table["split"] == split) & (table["tolerance_factor"] == 1.0) & (table["challenger"] == "nm")]
        against = {base: group.set_index(["claim", "weight_bits"]) for base, group in mine.groupby("base")}
        if set(against) != {"irregular", "structured"}:
            continue
        both = against["irregular"].join(against["structured"], suffixes=("_irregular", "_structured"), how="inner")
        cheapest = both[(both["ratio_irregular"] < 1) & (both["ratio_structured"] < 1)]
        found = [f"{SHORT_CLAIMS.get(claim, claim)} at {bits} bits (P = {r.p_cheaper_irregular:.2f} against irregular, "
                 f"{r.p_cheaper_structured:.2f} against structured)" for (claim, bits), r in cheapest.iterrows()]
        parts.append(f"{network}: " + ("; ".join(found) if found else "nowhere"))
    if not parts:
        return ""
    return "Where the N:M frontier is the cheapest of the three at the tolerance line: " + " | ".join(parts) + "."


def claims_table(rows_by_network: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per claim, and per network two columns: our numbers (``<network>: ours``) and the verdict
    (``<network>``). A claim about one network only (the LeNet-5 rate) leaves the others' cells empty."""
    claims: dict[str, dict[str, Any]] = {}
    for network, rows in rows_by_network.items():
        for row in rows:
            entry = claims.setdefault(row["claim"], {"claim": row["claim"], "published": row["published"]})
            entry[f"{network}: ours"], entry[network] = row["ours"], row["at our scale"]
            entry[f"{network}: {PROBABILITY}"] = row.get(PROBABILITY, "")
    columns = ["claim", "published"] + [c for n in rows_by_network for c in (f"{n}: ours", n, f"{n}: {PROBABILITY}")]
    return pd.DataFrame(list(claims.values()), columns=columns).fillna("")


def claims_summary(table: pd.DataFrame, networks: Iterable[str]) -> str:
    """One Markdown line per claim: the networks for which it holds, does not hold, ... (from the table)."""
    lines = []
    for row in table.to_dict("records"):
        by_verdict: dict[str, list[str]] = {}
        for network in networks:
            if row.get(network):
                by_verdict.setdefault(row[network], []).append(network)
        parts = [f"{verdict} for {', '.join(nets)}" for verdict, nets in by_verdict.items()]
        lines.append(f"- *{row['claim']}*: {'; '.join(parts) or 'not measured'}.")
    return "\n".join(lines)
