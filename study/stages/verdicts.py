"""Stage ``verdicts@<baseline>``: the storage and energy claims decided by the cost gap (``study.report.gap``).

Reads what the frontier stage priced and judged (``models.csv``: every model's costs; ``correct.npz``: its
per-image correctness on validation and test) and what the seeds stage made again at other seeds (the training
noise), so it runs in seconds and needs no checkpoint. Everything that built the pools (when a schedule stopped,
snapped or trained, which step is picked) used the validation images; the verdict is read on the test images
(``gap.split``), which no choice saw, with the validation split's beside it. Per claim, width, split and tolerance
(``gap.tolerance_factors`` times the study's): the ratio structured / irregular at the line and over the band below
dense, their intervals, the probability that the structured side is cheaper with its Monte Carlo error, the Holm
verdict of the claim's widths, and the same verdict from a second bootstrap seed (``gap.check_seed``): a verdict
that a seed turns is marked, not hidden. Where N:M models were priced, N:M against each side the same way (columns
``base`` and ``challenger`` name the comparison; ``p_cheaper`` is the challenger's).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from study import paths
from study.contract import FULL_PRECISION_BITS
from study.core import catalog
from study.core.params import Params
from study.progress import line, phase
from study.report import gap
from study.report.frontier import NM_SIDE, SIDES, SPLITS, load_correct
from study.report.claims import FRONTIER_CLAIMS, combined_verdict
from study.stages.common import StageResult, begin, finish, write_tables


def schedules_at(models: pd.DataFrame, bits: int) -> list[gap.Schedule]:
    """The schedules of one width: per method and scheme its steps in order, after the unpruned model of the width
    (rows are positions in ``models``)."""
    at = models[models["weight_bits"] == bits]
    dense = at.index[at["scheme"] == "dense"]
    if len(dense) != 1:
        raise ValueError(f"{len(dense)} unpruned models at {bits} bits in the frontier's models.csv; expected one")
    out = []
    for (method, scheme), group in at[at["scheme"] != "dense"].groupby(["method", "scheme"], sort=False):
        ordered = group.sort_values("step")
        out.append(gap.Schedule(str(ordered["side"].iloc[0]), f"{method} {scheme}", (int(dense[0]), *map(int, ordered.index))))
    return out


def training_noise(per_seed: pd.DataFrame) -> gap.SeedNoise:
    """The seed variance of the paired test loss, pooled over the pruned models the seeds stage made again (each at
    every seed, against the dense model of its own seed): test images, the same for every seed."""
    if per_seed.empty:
        return gap.SeedNoise()
    dense = per_seed[per_seed["scheme"] == "dense"].set_index("seed")["test_accuracy"]
    pruned = per_seed[per_seed["scheme"] != "dense"]
    losses = {f"{scheme} step {step}": (group["seed"].map(dense) - group["test_accuracy"]).to_numpy()
              for (scheme, step), group in pruned.groupby(["scheme", "step"])}
    return gap.seed_variance(losses)


def claim_widths(claim: str, widths: list[int]) -> list[int]:
    """The widths one claim's family covers: the storage claim is about quantized weights only."""
    quantized_only = FRONTIER_CLAIMS[claim][3]
    return [b for b in widths if not (quantized_only and b == FULL_PRECISION_BITS)]


def pairs_of(models: pd.DataFrame) -> list[tuple[str, str]]:
    """The comparisons the models allow, (base, challenger): structured against irregular, the paper's claim, and
    where N:M models are priced too, N:M against each of the two."""
    sides = set(models["side"])
    pairs = [gap.MAIN_PAIR]
    if NM_SIDE in sides:
        pairs += [(side, NM_SIDE) for side in SIDES if side in sides]
    return pairs


def gap_table(models: pd.DataFrame, correct: dict[str, np.ndarray], noise: gap.SeedNoise, tolerance_pp: float,
              params: Params, seed: int) -> pd.DataFrame:
    """Every comparison and claim at every width, split and tolerance factor, each comparison's claim decided per
    family (its widths) by Holm. ``p_cheaper``: the probability that the challenger is the cheaper side at the line."""
    widths = sorted((int(b) for b in models["weight_bits"].unique()), reverse=True)
    reference = models.index[(models["scheme"] == "dense") & (models["weight_bits"] == FULL_PRECISION_BITS)][0]
    schedules = {b: schedules_at(models, b) for b in widths}
    rows = []
    for split in SPLITS:
        hits = np.stack([correct[f"{split}/{i}"] for i in models["id"]])
        # A sequential stop: drawn once at `resamples`; where a verdict of the split it is read on lies within 3 Monte
        # Carlo errors of its cut (one that another bootstrap seed could turn), that split is drawn again with
        # `refine_factor` times as many (the other split's P only stands beside it: not worth the time).
        split_rows = _split_rows(models, schedules, split, hits, reference, noise, tolerance_pp, params, params.gap.resamples, seed)
        if split == params.gap.split and params.gap.refine_factor > 1 and any(r["near_cut"] for r in split_rows):
            split_rows = _split_rows(models, schedules, split, hits, reference, noise, tolerance_pp, params,
                                     params.gap.refine_factor * params.gap.resamples, seed)
        rows += split_rows
    return pd.DataFrame(rows)


def _split_rows(models: pd.DataFrame, schedules: dict[int, list], split: str, split_hits: np.ndarray, reference: int,
                noise: gap.SeedNoise, tolerance_pp: float, params: Params, resamples: int, seed: int) -> list[dict]:
    """One split's rows of ``gap_table``, from ``resamples`` replicates."""
    settings, confidence = params.gap, params.verdicts.confidence
    widths = sorted(schedules, reverse=True)
    every = [s for b in widths for s in schedules[b]]
    losses = gap.paired_losses(split_hits, split_hits[reference], every, noise, resamples, seed)
    fitted = {b: gap.FittedSplit.of(losses, schedules[b]) for b in widths}
    rows = []
    for pair in pairs_of(models):
        for factor in settings.tolerance_factors:
            tolerance = factor * tolerance_pp / 100
            for claim in (c for c in FRONTIER_CLAIMS if c in models):
                costs = models[claim].to_numpy(dtype=float)
                family = claim_widths(claim, widths)
                gaps = [gap.gap_at(fitted[b], costs, schedules[b], tolerance, params.verdicts.levels, confidence, pair)
                        for b in family]
                for b, g, verdict, near in zip(family, gaps, gap.family_verdicts(gaps, confidence), gap.near_cut(gaps, confidence)):
                    rows.append({"base": pair[0], "challenger": pair[1], "claim": claim, "weight_bits": b, "split": split,
                                 "tolerance_factor": factor, "tolerance_pp": factor * tolerance_pp, "verdict": verdict,
                                 "p_cheaper": g.probability, "p_two_sided": gap.two_sided(g.probability), "near_cut": near}
                                | {k: v for k, v in asdict(g).items() if k not in ("probability", "reached")})
    return rows


def combined(table: pd.DataFrame) -> pd.DataFrame:
    """Per comparison, claim, split and tolerance factor: the claim over its widths
    (``study.report.claims.combined_verdict``)."""
    out = []
    for (base, challenger, claim, split, factor), group in table.groupby(
            ["base", "challenger", "claim", "split", "tolerance_factor"], sort=False):
        out.append({"base": base, "challenger": challenger, "claim": claim, "split": split, "tolerance_factor": factor,
                    "verdict": combined_verdict(list(group["verdict"])),
                    "widths": ", ".join(f"{b}-bit {v}" for b, v in zip(group["weight_bits"], group["verdict"]))})
    return pd.DataFrame(out)


def _json_rows(table: pd.DataFrame) -> list[dict]:
    """Rows as JSON records; a ratio that is not finite (no side, or one side only, reaches the line) as null: JSON
    has no NaN or infinity. The CSV keeps them."""
    finite = table.replace([np.inf, -np.inf], np.nan)
    return finite.astype(object).where(finite.notna(), None).to_dict(orient="records")


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = params.baselines[baseline]
    frontier_record = catalog.read_record(layout.read(paths.results("frontier", baseline)))
    folder = layout.read(paths.tables("frontier", baseline))
    models = pd.read_csv(folder / "models.csv")
    correct = load_correct(folder / "correct.npz", {"val": frontier_record["val_size"], "test": frontier_record["test_size"]})
    per_seed_file = layout.read(paths.tables("seeds", baseline)) / "per_seed.csv"
    per_seed = pd.read_csv(per_seed_file) if per_seed_file.is_file() else pd.DataFrame()
    noise = training_noise(per_seed)
    tolerance = params.admm.tolerance_for(baseline)
    line(f"{baseline}: {len(models)} models; training-seed sd of the paired loss {100 * np.sqrt(noise.variance):.3f} pp "
         f"({noise.dof} degrees of freedom); {params.gap.resamples} replicates per split")
    with phase("cost gap, two-level bootstrap"):
        table = gap_table(models, correct, noise, tolerance, params, params.seed)
    with phase(f"the same with bootstrap seed {params.gap.check_seed}"):
        check = gap_table(models, correct, noise, tolerance, params, params.gap.check_seed)
    table["verdict_check_seed"] = check["verdict"].to_numpy()
    table["p_check_seed"] = check["p_cheaper"].to_numpy()
    claims = combined(table)
    out = layout.write(paths.tables("verdicts", baseline))
    write_tables(out, {"verdicts": table, "claims": claims})
    at_tolerance = (table["split"] == params.gap.split) & (table["tolerance_factor"] == 1.0)
    primary = table[at_tolerance & (table["base"] == gap.MAIN_PAIR[0]) & (table["challenger"] == gap.MAIN_PAIR[1])]
    dense = models[(models["scheme"] == "dense") & (models["weight_bits"] == FULL_PRECISION_BITS)].iloc[0]
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": FULL_PRECISION_BITS,
        "test_accuracy": float(dense["test_accuracy"]), "val_accuracy": float(dense["val_accuracy"]), "pruning_rate": 1.0,
        "split": params.gap.split, "tolerance_pp": tolerance, "resamples": params.gap.resamples,
        "seed_sd_pp": 100 * float(np.sqrt(noise.variance)), "seed_dof": noise.dof,
        "turned_by_check_seed": int((table["verdict"] != table["verdict_check_seed"]).sum()),
        "verdicts": _json_rows(primary[["claim", "weight_bits", "verdict", "p_cheaper", "ratio", "ratio_low", "ratio_high"]]),
        "claims": claims[(claims["split"] == params.gap.split) & (claims["tolerance_factor"] == 1.0)][
            ["base", "challenger", "claim", "verdict"]].to_dict(orient="records"),
    }
    metrics = finish(layout, "verdicts", baseline, record, clock, ("turned_by_check_seed",), params.seed,
                     {"gap": params.gap.model_dump(), "tolerance_pp": tolerance})
    return StageResult(metrics, {"verdicts": table, "claims": claims})
