"""Stage ``frontier@<baseline>``: every model of every schedule priced and judged image by image, and the claims'
verdicts drawn along both frontiers with their probabilities (``study.report.frontier``).

The models: the dense baseline at every width (as its quantize stage kept it), and every step of every pruning
schedule (ADMM's for each scheme, global magnitude pruning's, L1 filter pruning's) at 32 bits and at every width of
``compare.weight_bits``. A step at a width is the quantize stage's kept model where that stage quantized this very
step (each ADMM scheme's selected step), else the step snapped onto the levels without training (post-training
quantization, survivors only): column ``quantized_by`` says which. Each model gets its storage (bit-exact, the
cheapest format the storage stage allows), its energy under both memory assumptions, and its per-image
correctness on the validation and the test split (``correct.npz``, bit-packed).

Verdicts: per claim (storage; energy with the weights from DRAM; energy with them on chip), width and split,
both frontiers at the tolerance line redrawn on a paired bootstrap (``params.yaml: verdicts``). Validation
decides; the test split is the confirmation printed beside it. On the same bootstrap: how often each step of each
schedule would be the selection rule's pick, and ADMM's reach at the line against magnitude pruning (irregular)
and L1 filter pruning (filter).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pandas as pd
import torch

from study import paths
from study.compression import quantize
from study import contract
from study.contract import FULL_PRECISION_BITS, STRUCTURED_SCHEMES
from study.core import artifacts, catalog, models, training
from study.core.params import Params
from study.costs import energy, storage
from study.progress import line, phase
from study.report import frontier as fr
from study.stages.common import StageResult, begin, finish, load_splits, write_tables

# What each claim prices a model by: a column of models.csv, and how the report names it.
CLAIMS = {"storage_kb": "storage (KB)", "energy_nj": "energy, weights from DRAM (nJ)",
          "energy_on_chip_nj": "energy, weights on chip (nJ)"}
SPLITS = fr.SPLITS


def model_costs(net: torch.nn.Module, scheme: str, bits: int, model_name: str, params: Params) -> dict[str, float]:
    """Stored KB and energy per inference (nJ, both memory assumptions) of one model, as the storage and energy
    stages count them (structured models compacted, irregular layers in the cheapest allowed format), and the
    non-zero weights of the stored model (``stored_nonzero``: the compacted rate's denominator)."""
    store, settings = params.storage, params.energy
    shape = models.INPUT_SHAPES[model_name]
    layers = storage.model_storage(net, scheme, bits, shape, store.index_bits, store.formats)
    costs = {"storage_kb": float(layers["total_bits"].sum()) / 8 / 1024, "stored_nonzero": int(layers["nonzero"].sum())}
    if settings is not None:
        config = settings.config()
        spent = energy.model_energy(net, scheme, bits, shape, settings.table_pj, config, store.index_bits, tuple(store.formats))
        stored_bits = int(spent["stored_bits"].sum())
        on_chip = energy.on_chip_components({c: float(spent[f"{c}_pj"].sum()) for c in energy.COMPONENTS}, stored_bits, config)
        costs |= {"energy_nj": float(spent["total_pj"].sum()) / 1000, "energy_on_chip_nj": sum(on_chip.values()) / 1000}
    return costs


def candidates(layout: paths.Layout, baseline: str, params: Params) -> list[dict]:
    """Every model to price and judge, with where its weights come from (nothing loaded yet)."""
    compare = params.compare
    widths = [FULL_PRECISION_BITS, *compare.weight_bits]
    rows = [{"method": "dense", "scheme": "dense", "step": 0, "target_rate": 1.0, "weight_bits": bits,
             "checkpoint": layout.read(paths.dense_checkpoint(baseline) if bits == FULL_PRECISION_BITS
                                       else paths.quantized_checkpoint(baseline, "dense", bits)),
             "quantized_by": None if bits == FULL_PRECISION_BITS else "quantize stage"} for bits in widths]
    selected = {s: catalog.read_record(layout.read(paths.results("prune", paths.item(baseline, s))))["selected_step"]
                for s in compare.schemes}
    for step in catalog.step_models(layout, baseline, compare.schemes):
        for bits in widths:
            own = step.method == "ADMM" and step.step == selected[step.scheme] and bits != FULL_PRECISION_BITS
            rows.append({"method": step.method, "scheme": step.scheme, "step": step.step, "target_rate": step.target_rate,
                         "weight_bits": bits,
                         "checkpoint": layout.read(paths.quantized_checkpoint(baseline, step.scheme, bits)) if own else step.checkpoint,
                         "quantized_by": None if bits == FULL_PRECISION_BITS else "quantize stage" if own else "snapped"})
    return rows


def snap_as_priced(net: torch.nn.Module, bits: int) -> None:
    """A step the quantize stage did not keep at this width, made as the frontier prices it (and the export stage
    publishes it): its survivors snapped onto the b-bit levels in place, no zero revived, checked on the levels."""
    alphas = quantize.snap_to_levels(net, bits, keep_support=True)
    quantize.check_on_levels(net, bits, alphas, keep_support=True)


def price_and_judge(rows: list[dict], model_name: str, splits: dict, params: Params) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Load (and snap where asked) every candidate; its costs, rates and per-image correctness per split."""
    table, correct = [], {}
    loaded: dict[str, torch.nn.Module] = {}
    for index, row in enumerate(rows):
        key = str(row["checkpoint"])
        if key not in loaded:
            loaded = {key: training.load_model(row["checkpoint"], model_name)[0]}  # one source model held at a time
        net = loaded[key]
        if row["quantized_by"] == "snapped":
            net = copy.deepcopy(net)
            snap_as_priced(net, row["weight_bits"])
        name = f"m{index}"
        hits = {split: training.correct_predictions(net, splits[split]) for split in SPLITS}
        correct.update({f"{split}/{name}": h for split, h in hits.items()})
        costs = model_costs(net, row["scheme"], row["weight_bits"], model_name, params)
        stored_nonzero = costs.pop("stored_nonzero")  # of the stored model: compacted where the scheme is structured
        table.append({"id": name, **{k: v for k, v in row.items() if k != "checkpoint"},
                      "side": fr.side_of(row["scheme"]),
                      "pruning_rate": models.count_weights(net) / max(1, models.count_nonzero_weights(net)),
                      "compact_pruning_rate": models.count_weights(net) / max(1, stored_nonzero)
                      if row["scheme"] in STRUCTURED_SCHEMES else None,
                      **costs,
                      "val_accuracy": float(hits["val"].mean()), "test_accuracy": float(hits["test"].mean())})
        if (index + 1) % 25 == 0 or index + 1 == len(rows):
            line(f"priced and judged {index + 1}/{len(rows)} models")
    return pd.DataFrame(table), correct


def verdict_tables(table: pd.DataFrame, correct: dict[str, np.ndarray], tolerance_pp: float, params: Params
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per claim, width and split: the verdict at the tolerance line with its probability and the accuracy bands
    in which each side is cheaper; and the frontier curves with their bootstrap bands (the figure's data)."""
    settings = params.verdicts
    tolerance = tolerance_pp / 100
    losses = np.linspace(0.0, tolerance, settings.levels)
    reference_id = table[(table["scheme"] == "dense") & (table["weight_bits"] == FULL_PRECISION_BITS)]["id"].iloc[0]
    verdicts, curves = [], []
    claims = [c for c in CLAIMS if c in table]
    for bits in sorted(table["weight_bits"].unique(), reverse=True):
        models_at = table[table["weight_bits"] == bits]
        for split in SPLITS:
            stacked = np.stack([correct[f"{split}/{i}"] for i in models_at["id"]])
            judged = fr.FrontierBootstrap(np.zeros(len(models_at)), models_at["side"], stacked, correct[f"{split}/{reference_id}"],
                                          resamples=settings.resamples, seed=params.seed)
            for claim in claims:
                priced = judged.priced(models_at[claim].to_numpy())
                at_line = priced.compare(tolerance, settings.confidence)
                curve = priced.curve(losses, settings.band)
                found = fr.bands(curve["loss"], curve["probability"], settings.confidence)
                chosen = {side: (models_at.iloc[i] if i is not None else None)
                          for side, i in (("irregular", at_line.irregular_model), ("structured", at_line.structured_model))}
                verdicts.append({
                    "claim": claim, "weight_bits": int(bits), "split": split, "verdict": at_line.verdict,
                    "p_structured_cheaper": at_line.probability,
                    "irregular_cost": at_line.irregular_cost, "structured_cost": at_line.structured_cost,
                    **{f"{side}_model": describe(row) for side, row in chosen.items()},
                    **{f"{side}_cheaper_loss_pp": spans(found[side]) for side in (*fr.SIDES, "undecided")},
                    "tolerance_pp": tolerance_pp, "resamples": settings.resamples,
                })
                curves.append(pd.DataFrame({"claim": claim, "weight_bits": int(bits), "split": split,
                                            **{k: v for k, v in curve.items()}}))
    return pd.DataFrame(verdicts), pd.concat(curves, ignore_index=True)


# ADMM against the baseline nobody here wrote, per scheme: what "outperforms the prior art" compares.
RIVALS = {"irregular": "magnitude", "filter": "L1 filter"}


def schedule_tables(table: pd.DataFrame, correct: dict[str, np.ndarray], tolerance_pp: float, params: Params
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """On the validation bootstrap, fp32 models only: how often each step of each schedule is the selection
    rule's pick (``picks``, ``study.contract.select_step``), and ADMM's reach at the tolerance line against its
    rival's (``methods``: the rate of the highest step at or above the line, and the probability that ADMM's is higher)."""
    steps = table[(table["weight_bits"] == FULL_PRECISION_BITS) & (table["method"] != "dense")].reset_index(drop=True)
    reference_id = table[(table["scheme"] == "dense") & (table["weight_bits"] == FULL_PRECISION_BITS)]["id"].iloc[0]
    reference = correct[f"val/{reference_id}"]
    hits = np.stack([correct[f"val/{i}"] for i in steps["id"]])
    n, resamples, seed = reference.size, params.verdicts.resamples, params.seed
    # one set of draws (the seed) for all three: counts of images only dense / only the step gets right, and accuracy
    only_dense = fr.bootstrap_counts(reference & ~hits, resamples, seed)
    only_step = fr.bootstrap_counts(hits & ~reference, resamples, seed)
    replicates = fr.bootstrap_accuracies(np.vstack([hits, reference[None, :]]), resamples, seed)
    lines, point_line = replicates[:, -1] - tolerance_pp / 100, reference.mean() - tolerance_pp / 100
    picks, reach = [], {}
    for (method, scheme), group in steps.groupby(["method", "scheme"], sort=False):
        index = group.index.to_numpy()
        rates = group["pruning_rate"].to_numpy()
        records = [{"step": int(r.step), "pruning_rate": r.pruning_rate, "val_accuracy": r.val_accuracy,
                    **contract.paired_counts(reference, hits[i])} for i, r in zip(index, group.itertuples())]
        chosen = contract.select_step(records, tolerance_pp)["step"]
        shares = fr.pick_shares(rates, only_dense[:, index], only_step[:, index], n, tolerance_pp)
        picks += [{"method": method, "scheme": scheme, "step": r["step"], "pruning_rate": r["pruning_rate"],
                   "val_accuracy": r["val_accuracy"], "loss_upper_bound_pp": 100 * contract.step_loss_bounds(r)[1],
                   "picked": r["step"] == chosen, "pick_probability": float(p)} for r, p in zip(records, shares)]
        reach[(method, scheme)] = (fr.rate_at_line(rates, replicates[:, index], lines),
                                   float(fr.rate_at_line(rates, hits[index].mean(axis=1)[None, :], np.array([point_line]))[0]))
    methods = []
    for scheme, rival in RIVALS.items():
        if ("ADMM", scheme) not in reach or (rival, scheme) not in reach:
            continue
        (ours, ours_point), (theirs, theirs_point) = reach[("ADMM", scheme)], reach[(rival, scheme)]
        methods.append({"scheme": scheme, "rival": rival, "admm_rate_at_line": ours_point, "rival_rate_at_line": theirs_point,
                        "p_admm_higher": float((ours > theirs).mean()), "p_equal": float((ours == theirs).mean()),
                        "p_rival_higher": float((ours < theirs).mean()), "resamples": resamples})
    return pd.DataFrame(picks), pd.DataFrame(methods)


def describe(row: pd.Series | None) -> str | None:
    """'ADMM column step 3 (6x), 8-bit' for a model row (None: no model reaches the level)."""
    if row is None:
        return None
    if row["scheme"] == "dense":
        return f"dense, {row['weight_bits']}-bit"
    return f"{row['method']} {row['scheme']} step {row['step']} ({row['target_rate']:g}x), {row['weight_bits']}-bit"


def spans(found: list[tuple[float, float]]) -> str:
    """Loss stretches (fractions) as text in points below dense: '0.00-0.10; 0.35-0.50' ('' where none); a stretch
    of one level is that level: '0.20'."""
    texts = ((f"{100 * a:.2f}", f"{100 * b:.2f}") for a, b in found)
    return "; ".join(low if low == high else f"{low}-{high}" for low, high in texts)


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = params.baselines[baseline]
    splits = load_splits(params, base.dataset)
    rows = candidates(layout, baseline, params)
    line(f"{baseline}: {len(rows)} models (every step of every schedule at {1 + len(params.compare.weight_bits)} widths)")
    with phase(f"frontier {baseline}"):
        table, correct = price_and_judge(rows, base.model, splits, params)
    tolerance = params.admm.tolerance_for(baseline)
    with phase("paired bootstrap"):
        verdicts, curves = verdict_tables(table, correct, tolerance, params)
        picks, methods = schedule_tables(table, correct, tolerance, params)
    out = layout.write(paths.tables("frontier", baseline))
    write_tables(out, {"models": table, "verdicts": verdicts, "curves": curves, "picks": picks, "methods": methods})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{key: np.packbits(hits) for key, hits in correct.items()})
    artifacts.atomic_write_bytes(out / "correct.npz", buffer.getvalue())
    dense = table[(table["scheme"] == "dense") & (table["weight_bits"] == FULL_PRECISION_BITS)].iloc[0]
    decided = verdicts[(verdicts["split"] == "val")]
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": FULL_PRECISION_BITS,
        "test_accuracy": float(dense["test_accuracy"]), "val_accuracy": float(dense["val_accuracy"]), "pruning_rate": 1.0,
        "models_judged": len(table), "val_size": len(correct[f"val/{dense['id']}"]),
        "test_size": len(correct[f"test/{dense['id']}"]), "tolerance_pp": tolerance,
        "verdicts": decided[["claim", "weight_bits", "verdict", "p_structured_cheaper"]].to_dict(orient="records"),
    }
    metrics = finish(layout, "frontier", baseline, record, clock, ("models_judged",), params.seed,
                     {"verdicts": params.verdicts.model_dump(), "tolerance_pp": tolerance})
    return StageResult(metrics, {"models": table, "verdicts": verdicts, "picks": picks, "methods": methods})

