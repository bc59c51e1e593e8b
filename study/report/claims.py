"""The paper's claims beside our results, each with a plain verdict computed from the stage outputs.

Each function returns one row: the claim, the published figure, ours, and one of four verdicts:

- *holds*;
- *does not hold*: compared at equal accuracy (both models within the tolerance) and equal bits;
- *not reproduced at this budget*: our run falls short, but it trained far less than the published one,
  so it neither confirms nor refutes the claim (the row states both budgets); for a frontier claim, a width at
  which no pruned model of either side stays within tolerance;
- *not measured*: the evidence is missing (a stage not run, or no pair of models within tolerance);

and for the claims judged along frontiers (storage, energy) a fifth, *undecided at this budget*: the validation
images cannot tell which side is cheaper at the tolerance line with 95% probability (``study.report.frontier``).

Published numbers come only from ``references/published_results.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from study.report import frontier
from study.report.common import network_of
from study.report.compute import latency_comparison
from study.report.uncertainty import Evidence

PAPER = "Wang, Ye, He, Ma et al., arXiv 1907.02124"


HOLDS, DOES_NOT_HOLD, NOT_AT_BUDGET, NOT_MEASURED = "holds", "does not hold", "not reproduced at this budget", "not measured"
UNDECIDED = frontier.UNDECIDED  # a frontier verdict that the validation images cannot settle (see frontier_claims)
VERDICTS = (HOLDS, DOES_NOT_HOLD, UNDECIDED, NOT_AT_BUDGET, NOT_MEASURED)
PROBABILITY = "P(structured cheaper)"  # the claims table's probability column, per network


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


def seed_agreement(per_seed: pd.DataFrame, models: pd.DataFrame, claim: str, weight_bits: int, verdict: str
                   ) -> tuple[int, int, str] | None:
    """At how many seeds the pair the seeds stage repeats (the picked irregular model and the structured model of the
    highest compacted rate, each made again at every seed by its schedule up to the same step) keeps a verdict: the
    side the verdict favours still costs less, and its model is still within tolerance of its own seed's dense model
    (the other side's falling out only widens the gap). Costs are the study's own models of the same steps (same
    rates; index bits of another seed's mask differ by little); tolerance is judged at fp32, the seeds stage's width.

    Returns (agreeing seeds, seeds, a short description of the pair), or None where there is nothing to count: no
    decided verdict, no pair, or no cost for it."""
    if verdict not in (HOLDS, DOES_NOT_HOLD) or per_seed.empty or models.empty:
        return None
    pruned = per_seed[per_seed["scheme"] != "dense"]
    structured = [s for s in dict.fromkeys(pruned["scheme"]) if s != "irregular"]
    if "irregular" not in set(pruned["scheme"]) or not structured:
        return None
    pair = {"irregular": "irregular", "structured": structured[0]}
    costs, steps = {}, {}
    for side, scheme in pair.items():
        steps[side] = int(pruned[pruned["scheme"] == scheme]["step"].iloc[0])
        found = models[(models["method"] == "ADMM") & (models["scheme"] == scheme) & (models["step"] == steps[side])
                       & (models["weight_bits"] == weight_bits)]
        if found.empty or claim not in found:
            return None
        costs[side] = float(found[claim].iloc[0])
    favoured = "structured" if verdict == HOLDS else "irregular"
    other = "irregular" if favoured == "structured" else "structured"
    described = f"irregular step {steps['irregular']} and {pair['structured']} step {steps['structured']}"
    seeds = sorted(pruned["seed"].unique())
    if not costs[favoured] < costs[other]:
        return 0, len(seeds), described + f", where {other} costs less: the verdict rests on other models"
    meets = pruned[pruned["scheme"] == pair[favoured]].set_index("seed")["meets_tolerance"]
    within = [str(meets.get(seed)) == "True" for seed in seeds]  # a CSV gives True, False or "True", "False"
    return sum(within), len(seeds), described


def no_pruned_model_at_line(verdict: Any) -> bool:
    """True where neither side has a pruned model within tolerance at the line on all validation images: both
    frontiers fall back to the unpruned model (the one model both sides share) or find no model at all. The
    comparison then says nothing about pruning at that width, whatever share of the replicates it tips."""
    irregular, structured = verdict.irregular_model, verdict.structured_model
    no_model = [pd.isna(m) or m == "" for m in (irregular, structured)]
    return all(no_model) or (not any(no_model) and irregular == structured)


def frontier_claims(verdicts: pd.DataFrame, on_chip_kb: float, per_seed: pd.DataFrame | None = None,
                    models: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The storage and energy claims from the frontier stage's verdicts (``verdicts.csv``): per width, the verdict
    on validation with its probability, the test split's probability beside it, the two frontiers' costs at the
    tolerance line, the loss band (points below dense) in which each side is cheaper, and, given the seeds stage's
    rows and the frontier's models, at how many seeds the verdict comes out the same (``seed_agreement``)."""
    per_seed = per_seed if per_seed is not None else pd.DataFrame()
    models = models if models is not None else pd.DataFrame()
    rows = []
    for claim, (text, published, unit, quantized_only) in FRONTIER_CLAIMS.items():
        text = text.format(on_chip_kb=on_chip_kb)
        decided = verdicts[(verdicts["claim"] == claim) & (verdicts["split"] == "val")] if not verdicts.empty else verdicts
        if quantized_only and not decided.empty:
            decided = decided[decided["weight_bits"] < 32]
        if decided.empty:
            rows.append(_row(text, published, "-", None) | {PROBABILITY: ""})
            continue
        test = verdicts[(verdicts["claim"] == claim) & (verdicts["split"] == "test")].set_index("weight_bits")
        parts, probabilities, width_verdicts = [], [], []
        for r in decided.sort_values("weight_bits", ascending=False).itertuples():
            confirm = f"; test {test.loc[r.weight_bits, 'p_structured_cheaper']:.2f}" if r.weight_bits in test.index else ""
            if r.verdict == NOT_MEASURED:
                parts.append(f"{r.weight_bits}-bit: not measured")
                continue
            if no_pruned_model_at_line(r):
                width_verdicts.append(NOT_AT_BUDGET)
                parts.append(f"{r.weight_bits}-bit: {NOT_AT_BUDGET}: no pruned model on either side is within tolerance "
                             f"at this width (on resampled images P = {r.p_structured_cheaper:.2f}{confirm})")
                probabilities.append(f"{r.weight_bits}-bit none within")
                continue
            width_verdicts.append(r.verdict)
            bands = "; ".join(f"{side} cheaper {getattr(r, f'{side}_cheaper_loss_pp')} pp below dense"
                              for side in frontier.SIDES if isinstance(getattr(r, f"{side}_cheaper_loss_pp"), str))
            agreement = seed_agreement(per_seed, models, claim, int(r.weight_bits), r.verdict)
            seeds = (f"; the same at {agreement[0]} of {agreement[1]} seeds ({agreement[2]})" if agreement else "")
            parts.append(f"{r.weight_bits}-bit: {r.verdict} (P = {r.p_structured_cheaper:.2f}{confirm}); at the line "
                         f"structured {r.structured_cost:.4g} {unit} ({r.structured_model}) vs irregular "
                         f"{r.irregular_cost:.4g} {unit} ({r.irregular_model})" + (f"; {bands}" if bands else "") + seeds)
            probabilities.append(f"{r.weight_bits}-bit {r.p_structured_cheaper:.2f}"
                                 + (f" (seeds {agreement[0]}/{agreement[1]})" if agreement else ""))
        width_verdicts += [NOT_MEASURED] * int((decided["verdict"] == NOT_MEASURED).sum())
        row = _row(text, published, " | ".join(parts), combined_verdict(width_verdicts))
        rows.append(row | {PROBABILITY: ", ".join(probabilities)})
    return rows


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
