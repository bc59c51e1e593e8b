"""Verdicts along whole frontiers, each with the probability that the same images would decide it otherwise.

A *frontier* is a step function of accuracy: at level ``a``, the cost (KB stored, or energy) of the cheapest
model whose accuracy is at least ``a``. One side's frontier pools every model of that side (irregular: ADMM
and magnitude pruning; structured: filter, channel and column pruning, compacted, by ADMM and by L1 filter
pruning); the unpruned model belongs to both sides (each side's rate-1 point), so a side always has a model
at the dense accuracy.

A claim compares the two frontiers at the tolerance line (dense accuracy minus the tolerance). Which side
is cheaper there depends on a handful of validation images when models sit near the line, so the decision
is redrawn on a *paired bootstrap* (Efron & Tibshirani 1993, ch. 6): each replicate resamples the image
indices once, with replacement, and every model's accuracy, the dense one's, and so the line itself, are
recomputed on that one resample. Models judged on the same images differ far less than their accuracies
do, which is what makes a verdict between close models possible at all.

- *holds* where the structured side is cheaper in at least ``confidence`` of the replicates,
- *does not hold* where the irregular side is cheaper in at least ``confidence`` of them,
- *undecided at this budget* otherwise; *not measured* where a side has no pruned model at all.

Ties (the same cost on both sides, e.g. both fall back to the unpruned model) count half to each side.
Pure numpy: the stages hand in per-image correctness (models x images) and costs; nothing here reads files.
Written here rather than taken from a statistics package: the percentile bootstrap of a min over a
step function is a few lines, and no package we know computes it for paired, pooled model sets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from study import contract
from study.contract import NM_SCHEME

HOLDS, DOES_NOT_HOLD, UNDECIDED, NOT_MEASURED = "holds", "does not hold", "undecided at this budget", "not measured"
SIDES = ("irregular", "structured")
NM_SIDE = "nm"  # semi-structured N:M pruning: a third side, judged against each of the two
BOTH = "both"  # the unpruned model: each side's rate-1 point
NOT_AT_BUDGET = "not reproduced at this budget"  # a width where no side has a pruned model within the line
SPLITS = ("val", "test")  # every model is judged on both: validation builds the pools, test confirms
CONFIDENCE = 0.95  # a verdict needs this share of the replicates; 1 - CONFIDENCE is the chance it is the images' doing
MIN_RESAMPLES = 2000  # percentile statements at 95% need a few thousand replicates (Efron & Tibshirani 1993, sec. 13.3)
BAND = 0.90  # the frontier figure's bootstrap band: 5th to 95th percentile
# Accuracies are whole images over n, levels a difference of such fractions: a model exactly on a level must not
# fall below it by a rounding error.
ROUNDING = 1e-12


def side_of(scheme: str) -> str:
    """The side a model of ``scheme`` belongs to: irregular, N:M, structured (filter, channel, column), or both (dense)."""
    return BOTH if scheme == "dense" else NM_SIDE if scheme == NM_SCHEME else "irregular" if scheme == "irregular" else "structured"


def frontier(costs: np.ndarray, accuracies: np.ndarray, levels: np.ndarray | float) -> np.ndarray:
    """The cheapest cost among models whose accuracy reaches each level (``inf`` where none does).

    ``costs``: (models,). ``accuracies``: (models,) or (replicates, models). ``levels``: a scalar, (levels,)
    for one accuracy vector, or (replicates,) / (replicates, levels) for a matrix of replicates.
    Returns the levels' shape (with the replicate axis first where there is one)."""
    costs = np.asarray(costs, dtype=float)
    accuracies = np.asarray(accuracies, dtype=float)
    levels = np.asarray(levels, dtype=float)
    if accuracies.shape[-1] != costs.shape[0]:
        raise ValueError(f"{costs.shape[0]} costs for {accuracies.shape[-1]} models")
    if accuracies.ndim == 1:
        reached = accuracies[None, :] >= levels.reshape(-1)[:, None] - ROUNDING  # (levels, models)
        return np.where(reached, costs, np.inf).min(axis=1, initial=np.inf).reshape(levels.shape)
    if levels.ndim == 0 or levels.shape[0] != accuracies.shape[0]:
        raise ValueError(f"levels of shape {levels.shape} for {accuracies.shape[0]} replicates: one row per replicate")
    per_row = levels.reshape(levels.shape[0], -1)  # (replicates, levels)
    reached = accuracies[:, None, :] >= per_row[:, :, None] - ROUNDING  # (replicates, levels, models)
    return np.where(reached, costs, np.inf).min(axis=2, initial=np.inf).reshape(levels.shape)


def resample_counts(n_images: int, resamples: int, seed: int, chunk: int = 250) -> Iterator[np.ndarray]:
    """How often each image is drawn in each replicate, ``chunk`` replicates at a time ((chunk, images) int32):
    a multinomial draw of ``n_images`` out of ``n_images`` is one bootstrap resample of the image indices."""
    if n_images <= 0 or resamples <= 0:
        raise ValueError(f"need images and resamples, got {n_images} images, {resamples} resamples")
    rng = np.random.default_rng(seed)
    uniform = np.full(n_images, 1.0 / n_images)
    for start in range(0, resamples, chunk):
        yield rng.multinomial(n_images, uniform, size=min(chunk, resamples - start)).astype(np.int32)


def bootstrap_counts(flags: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """How many of each row's flagged images each paired resample draws: (resamples, rows) from (rows, images)
    booleans. Every row of a replicate sees the same images; the same seed, the same draws."""
    flags = np.asarray(flags, dtype=bool)
    if flags.ndim != 2:
        raise ValueError(f"per-image flags must be (models, images), got shape {flags.shape}")
    columns = flags.astype(np.float32).T  # (images, rows); counts stay exact in float32 below 2^24 images
    return np.concatenate([counts.astype(np.float32) @ columns for counts in resample_counts(flags.shape[1], resamples, seed)])


def bootstrap_accuracies(correct: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Every model's accuracy on each paired resample: (resamples, models) from per-image ``correct``
    (models, images) booleans."""
    correct = np.asarray(correct, dtype=bool)
    return bootstrap_counts(correct, resamples, seed).astype(np.float64) / correct.shape[-1]


@dataclass(frozen=True)
class Comparison:
    """Both frontiers at one accuracy level per replicate, and what they say.

    ``probability``: the share of replicates where the structured side is cheaper (ties count half)."""

    probability: float
    verdict: str
    irregular_cost: float  # each side's frontier at the level on all images (no resampling)
    structured_cost: float
    irregular_model: int | None  # index of the model that sets it (None where no model reaches the level)
    structured_model: int | None


def verdict_of(probability: float, confidence: float = CONFIDENCE) -> str:
    """holds / does not hold / undecided from the share of replicates in which the structured side is cheaper."""
    if not 0.5 < confidence <= 1:
        raise ValueError(f"confidence {confidence} must be in (0.5, 1]")
    if probability >= confidence:
        return HOLDS
    if probability <= 1 - confidence:
        return DOES_NOT_HOLD
    return UNDECIDED


def _cheaper_share(irregular: np.ndarray, structured: np.ndarray) -> np.ndarray:
    """Per replicate (and level): 1 where structured is cheaper, 0 where irregular is, 1/2 on a tie."""
    return np.where(structured < irregular, 1.0, np.where(structured > irregular, 0.0, 0.5))


def _cheapest(costs: np.ndarray, accuracies: np.ndarray, level: float) -> int | None:
    reached = np.flatnonzero(accuracies >= level - ROUNDING)
    return None if reached.size == 0 else int(reached[np.argmin(costs[reached])])  # the first of equal costs


class FrontierBootstrap:
    """Both sides' models of one comparison (one network, one cost, one bit width) on the same images.

    ``sides``: per model, "irregular", "structured" or "both" (the unpruned model). ``correct``: per-image
    correctness (models, images). ``reference``: the per-image correctness of the model the tolerance line
    is drawn from (the dense fp32 model)."""

    def __init__(self, costs: Sequence[float], sides: Sequence[str], correct: np.ndarray, reference: np.ndarray,
                 resamples: int = MIN_RESAMPLES, seed: int = 0) -> None:
        self.costs = np.asarray(costs, dtype=float)
        self.sides = np.asarray(sides, dtype=object)
        correct = np.asarray(correct, dtype=bool)
        reference = np.asarray(reference, dtype=bool)
        if not len(self.costs) == len(self.sides) == correct.shape[0]:
            raise ValueError(f"{len(self.costs)} costs, {len(self.sides)} sides and {correct.shape[0]} correctness rows")
        if correct.shape[1:] != reference.shape:
            raise ValueError(f"models judged on {correct.shape[1:]} images, the reference on {reference.shape}")
        unknown = sorted(set(self.sides) - {*SIDES, NM_SIDE, BOTH})
        if unknown:
            raise ValueError(f"unknown sides {unknown}; each model is one of {[*SIDES, NM_SIDE, BOTH]}")
        if np.isnan(self.costs).any():
            raise ValueError("a model without a cost: every model of a comparison needs one")
        stacked = np.vstack([correct, reference[None, :]])
        self.point = stacked.mean(axis=1)  # all images: models..., reference last
        self.replicates = bootstrap_accuracies(stacked, resamples, seed)
        self.resamples = resamples

    def priced(self, costs: Sequence[float]) -> "FrontierBootstrap":
        """The same models and replicates under other costs (another claim): the resampling is done once."""
        costs = np.asarray(costs, dtype=float)
        if costs.shape != self.costs.shape or np.isnan(costs).any():
            raise ValueError(f"{costs.shape[0]} costs (NaN: {bool(np.isnan(costs).any())}) for {len(self.costs)} models")
        other = copy.copy(self)
        other.costs = costs
        return other

    def _side(self, side: str) -> np.ndarray:
        return (self.sides == side) | (self.sides == BOTH)

    def measured(self) -> bool:
        """Both sides have at least one pruned model (not only the shared unpruned one)."""
        return all((self.sides == side).any() for side in SIDES)

    def compare(self, loss: float, confidence: float = CONFIDENCE) -> Comparison:
        """Both frontiers at ``loss`` (a fraction) below the reference's accuracy, redrawn on every replicate."""
        if not self.measured():
            return Comparison(float("nan"), NOT_MEASURED, float("nan"), float("nan"), None, None)
        line = self.replicates[:, -1] - loss
        costs = {}
        for side in SIDES:
            keep = self._side(side)
            costs[side] = frontier(self.costs[keep], self.replicates[:, :-1][:, keep], line)
        probability = float(_cheaper_share(costs["irregular"], costs["structured"]).mean())
        point_line = self.point[-1] - loss
        models = self.point[:-1]
        chosen = {}
        for side in SIDES:
            indices = np.flatnonzero(self._side(side))
            pick = _cheapest(self.costs[indices], models[indices], point_line)
            chosen[side] = None if pick is None else int(indices[pick])
        cost_at = {side: (self.costs[chosen[side]] if chosen[side] is not None else np.inf) for side in SIDES}
        return Comparison(probability, verdict_of(probability, confidence), float(cost_at["irregular"]),
                          float(cost_at["structured"]), chosen["irregular"], chosen["structured"])

    def curve(self, losses: np.ndarray, band: float = BAND) -> dict[str, np.ndarray]:
        """Over a grid of ``losses`` below the reference: each side's frontier on all images and its bootstrap
        band (``band`` central share), and the probability that the structured side is cheaper."""
        losses = np.asarray(losses, dtype=float)
        lines = self.replicates[:, -1:] - losses[None, :]  # (replicates, levels)
        tail = (1 - band) / 2
        out: dict[str, np.ndarray] = {"loss": losses, "accuracy": self.point[-1] - losses}
        resampled = {}
        for side in (*SIDES, NM_SIDE) if (self.sides == NM_SIDE).any() else SIDES:  # N:M's frontier where it is priced
            keep = self._side(side)
            accuracies = self.replicates[:, :-1][:, keep]
            # one level at a time: (replicates, levels, models) at once would hold ~10^8 values
            resampled[side] = np.stack([frontier(self.costs[keep], accuracies, lines[:, j]) for j in range(len(losses))], axis=1)
            out[side] = frontier(self.costs[keep], self.point[:-1][keep], out["accuracy"])
            out[f"{side}_low"], out[f"{side}_high"] = np.quantile(resampled[side], [tail, 1 - tail], axis=0)
        out["probability"] = _cheaper_share(resampled["irregular"], resampled["structured"]).mean(axis=0)
        return out


def bands(losses: np.ndarray, probability: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, list[tuple[float, float]]]:
    """The stretches of ``losses`` (sorted) over which each side is cheaper with at least ``confidence``:
    {"structured": [(from, to), ...], "irregular": [...], "undecided": [...]} (loss fractions, inclusive)."""
    losses, probability = np.asarray(losses, dtype=float), np.asarray(probability, dtype=float)
    if losses.shape != probability.shape or np.any(np.diff(losses) < 0):
        raise ValueError("losses must be sorted and as long as the probabilities")
    label = np.where(probability >= confidence, "structured", np.where(probability <= 1 - confidence, "irregular", "undecided"))
    out: dict[str, list[tuple[float, float]]] = {"structured": [], "irregular": [], "undecided": []}
    start = 0
    for i in range(1, len(losses) + 1):
        if i == len(losses) or label[i] != label[start]:
            out[str(label[start])].append((float(losses[start]), float(losses[i - 1])))
            start = i
    return out


def pick_shares(rates: Sequence[float], only_reference_right: np.ndarray, only_model_right: np.ndarray, n: int,
                tolerance_pp: float) -> np.ndarray:
    """How often each step of a schedule is the pick of ``study.contract.select_step`` over the replicates: the
    highest-rate step whose paired upper loss bound is within the tolerance, else the most accurate one (the first
    among equals). Counts: (replicates, steps) of the resampled images only the dense model / only the step gets
    right, out of ``n``. Returns the share per step (sums to 1)."""
    rates = np.asarray(rates, dtype=float)
    b = np.atleast_2d(np.asarray(only_reference_right, dtype=float))
    c = np.atleast_2d(np.asarray(only_model_right, dtype=float))
    _, upper = contract.paired_loss_bounds(b, c, n)
    reached = upper <= tolerance_pp / 100 + 1e-12
    by_rate = np.where(reached, rates[None, :], -np.inf)
    highest = np.argmax(by_rate == by_rate.max(axis=1, keepdims=True), axis=1)  # select_step's max(): first of equals
    most_accurate = np.argmax(c - b == (c - b).max(axis=1, keepdims=True), axis=1)  # accuracy = dense's + (c - b) / n
    picks = np.where(reached.any(axis=1), highest, most_accurate)
    return np.bincount(picks, minlength=len(rates)) / len(picks)


def rate_at_line(rates: Sequence[float], accuracies: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Per replicate, the highest pruning rate among models at or above the line (1.0, the unpruned model, where
    none is): a method's reach at the tolerance line, the frontier of rate instead of cost."""
    reach = -frontier(-np.asarray(rates, dtype=float), accuracies, lines)
    return np.where(np.isfinite(reach), np.maximum(reach, 1.0), 1.0)


def load_correct(path, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """The frontier stage's ``correct.npz`` back to boolean vectors ("<split>/<model id>" -> per-image correctness;
    ``sizes``: images per split, from the stage's record: the packed bits are padded to whole bytes)."""
    with np.load(path, allow_pickle=False) as packed:
        return {key: np.unpackbits(packed[key])[:sizes[key.split("/")[0]]].astype(bool) for key in packed.files}
