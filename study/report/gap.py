"""The cost gap between the two sides at the same accuracy, with training noise and image noise inside its interval.

The frontier step plot (``study.report.frontier``) reads which model happens to clear the tolerance line; a few
images move a model across it and the verdict with it. The statistic here measures *how large* the gap is:

1. Each schedule (one method and scheme, its steps in order of rate, the unpruned model of the same width first)
   gets a monotone fit of paired accuracy loss along its steps: isotonic regression (pool adjacent violators,
   Barlow et al. 1972), since a schedule that prunes more cannot truly lose less; image noise that puts a later
   step above an earlier one is averaged out instead of read as a step.
2. A schedule's cost at a loss level is read off its fitted curve by linear interpolation of log cost between the
   last step within the level and the first beyond it: a run at an intermediate rate is what any user of the
   schedule would do to hit the level. Never extrapolated: beyond its last step a schedule costs its cheapest
   step within the level; where even its first point is beyond the level it reaches nothing (``inf``).
3. A side's cost at a level is its cheapest schedule there (ADMM and the baselines nobody here wrote pooled).
   The statistic is the ratio structured / irregular at the tolerance line, and its geometric mean over the band
   [0, tolerance] below the dense model (where N:M models are priced, N:M against each side the same way).

Uncertainty is a two-level bootstrap: each replicate draws a training-seed variance from its estimate (scaled
inverse chi-square with the estimate's degrees of freedom: the variance is itself uncertain, Gelman et al.,
*Bayesian Data Analysis*, sec. 3.2), shifts each schedule's losses by one normal draw of that variance (a schedule
is one training trajectory, so its steps move together), then resamples the images (paired: every model and the
dense reference on the same draw). The probability is the share of replicates where the structured side is
cheaper at the line; one claim's widths are one family, decided by Holm's step-down rule (Holm 1979) on two-sided
p-values, so a claim decided at any width is wrong with at most 1 - confidence probability.

Pure numpy; scipy only to check the fit in tests. Written here rather than taken from a package: no package we
know fits isotonic curves for every bootstrap replicate at once, which is what makes 20,000 replicates cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from study.report.frontier import DOES_NOT_HOLD, HOLDS, NOT_AT_BUDGET, ROUNDING, SIDES, UNDECIDED, resample_counts

MAIN_PAIR = SIDES  # (base, challenger): the paper's claim, structured against irregular


def isotonic_rows(values: np.ndarray) -> np.ndarray:
    """The least-squares non-decreasing fit of each row (equal weights), for short rows (a schedule's steps).

    Uses the max-min formula f_k = max_{i<=k} min_{j>=k} mean(values[i..j]) (Barlow et al. 1972), the same fit
    pool-adjacent-violators finds:
    O(K^3) per row, all rows at once, which for K <= ~12 steps beats a per-row pool-adjacent-violators loop."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"rows of values must be 2-D (rows, steps), got shape {values.shape}")
    rows, k = values.shape
    if k <= 1:
        return values.copy()
    sums = np.concatenate([np.zeros((rows, 1)), np.cumsum(values, axis=1)], axis=1)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums[:, j + 1] - sums[:, i]) / (j - i + 1)  # (rows, i, j), meaningful where j >= i
    means = np.where(j >= i, means, np.inf)
    suffix_min = np.minimum.accumulate(means[:, :, ::-1], axis=2)[:, :, ::-1]  # min over j >= k, at [.., i, k]
    suffix_min = np.where(i <= j, suffix_min, -np.inf)  # only starts i <= k count
    return suffix_min.max(axis=1)


def cost_at_level(fitted: np.ndarray, log_costs: np.ndarray, level: float) -> np.ndarray:
    """Per row of ``fitted`` (rows, steps; non-decreasing losses along a schedule), the log cost at which the
    schedule reaches ``level``: the cheapest step within it, or the log-linear interpolation towards the first
    step beyond it where that is cheaper; ``inf`` where no step is within the level."""
    fitted = np.atleast_2d(np.asarray(fitted, dtype=float))
    log_costs = np.asarray(log_costs, dtype=float)
    rows, k = fitted.shape
    if log_costs.shape != (k,):
        raise ValueError(f"{log_costs.shape} costs for {k} steps")
    within = fitted <= level + ROUNDING
    reached = within.sum(axis=1)  # a prefix: the fit is non-decreasing
    last = np.clip(reached - 1, 0, k - 1)
    cheapest = np.minimum.accumulate(log_costs)[last]
    out = np.where(reached > 0, cheapest, np.inf)
    beyond = (reached > 0) & (reached < k)
    if beyond.any():
        r = np.flatnonzero(beyond)
        a, b = last[r], last[r] + 1
        fa, fb = fitted[r, a], fitted[r, b]
        share = np.clip((level - fa) / np.maximum(fb - fa, 1e-300), 0.0, 1.0)
        interpolated = log_costs[a] + share * (log_costs[b] - log_costs[a])
        out[r] = np.minimum(out[r], interpolated)
    return out


@dataclass(frozen=True)
class Schedule:
    """One schedule of one side at one width: model rows (into the correctness matrix) in order of rate, the
    unpruned model of the width first."""

    side: str
    name: str
    rows: tuple[int, ...]


@dataclass(frozen=True)
class SeedNoise:
    """The training-seed variance of a model's paired loss, estimated from models made again at other seeds:
    ``variance`` (a fraction squared) with ``dof`` degrees of freedom (0: no estimate, no seed noise)."""

    variance: float = 0.0
    dof: int = 0

    def draws(self, rng: np.random.Generator, replicates: int) -> np.ndarray:
        """One variance per replicate: s^2 * dof / chi^2_dof (the estimate's own uncertainty inside)."""
        if self.dof <= 0 or self.variance <= 0:
            return np.zeros(replicates)
        return self.variance * self.dof / rng.chisquare(self.dof, size=replicates)


def seed_variance(losses_by_model: dict[str, Sequence[float]]) -> SeedNoise:
    """Pooled within-model variance of the paired loss over seeds: each model (the same schedule and step) made at
    several seeds contributes its sample variance with (seeds - 1) degrees of freedom."""
    squares, dof = 0.0, 0
    for losses in losses_by_model.values():
        values = np.asarray(losses, dtype=float)
        if values.size >= 2:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += values.size - 1
    return SeedNoise(squares / dof if dof else 0.0, dof)


@dataclass
class GapReplicates:
    """Every model's paired loss on all images of one split (``point``) and on each bootstrap replicate."""

    point: np.ndarray  # (models,) loss against the reference on all images
    replicates: np.ndarray  # (replicates, models), seed noise included where asked
    images_only: np.ndarray  # (replicates, models), the same image draws without seed noise


def paired_losses(correct: np.ndarray, reference: np.ndarray, schedules: Sequence[Schedule], noise: SeedNoise,
                  resamples: int, seed: int) -> GapReplicates:
    """Losses (reference accuracy minus model accuracy) on all images and on ``resamples`` paired bootstrap
    replicates; seed noise added per schedule (the unpruned first row of a schedule is not shifted: it is shared
    by both sides, and the reference's own seed noise moves both sides alike)."""
    correct = np.asarray(correct, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if correct.shape[1:] != reference.shape:
        raise ValueError(f"models judged on {correct.shape[1:]} images, the reference on {reference.shape}")
    n = reference.size
    stacked = np.vstack([correct, reference[None, :]]).astype(np.float32).T  # (images, models + 1)
    counts = np.concatenate([c.astype(np.float32) @ stacked for c in resample_counts(n, resamples, seed)])
    accuracy = counts.astype(np.float64) / n
    images_only = accuracy[:, -1:] - accuracy[:, :-1]
    point = reference.mean() - correct.mean(axis=1)
    rng = np.random.default_rng([seed, 1])  # its own stream: the image draws do not depend on the seed noise
    variances = noise.draws(rng, resamples)
    shifted = images_only.copy()
    for schedule in schedules:
        shift = rng.standard_normal(resamples) * np.sqrt(variances)
        pruned = list(schedule.rows[1:])
        shifted[:, pruned] += shift[:, None]
    return GapReplicates(point, shifted, images_only)


Fits = dict[str, np.ndarray]  # schedule name -> (rows, steps) fitted losses


def fit_schedules(losses: np.ndarray, schedules: Sequence[Schedule]) -> Fits:
    """Each schedule's isotonic fit of its models' losses, per row of ``losses`` (rows, models)."""
    losses = np.atleast_2d(losses)
    return {s.name: isotonic_rows(losses[:, list(s.rows)]) for s in schedules}


def side_log_cost(fits: Fits, costs: np.ndarray, schedules: Sequence[Schedule], side: str,
                  levels: np.ndarray) -> np.ndarray:
    """(rows, levels) log cost of ``side``'s cheapest fitted schedule at each loss level."""
    log_costs = np.log(np.asarray(costs, dtype=float))
    rows = next(iter(fits.values())).shape[0]
    out = np.full((rows, len(levels)), np.inf)
    for schedule in schedules:
        if schedule.side == side:
            for j, level in enumerate(levels):
                reached = cost_at_level(fits[schedule.name], log_costs[list(schedule.rows)], float(level))
                out[:, j] = np.minimum(out[:, j], reached)
    return out


@dataclass
class FittedSplit:
    """One split's fits, on all images (``point``), on the replicates with seed noise (``both``) and without it
    (``images``): what every claim and tolerance of one width reads."""

    point: Fits
    both: Fits
    images: Fits

    @classmethod
    def of(cls, losses: GapReplicates, schedules: Sequence[Schedule]) -> "FittedSplit":
        return cls(fit_schedules(losses.point[None, :], schedules), fit_schedules(losses.replicates, schedules),
                   fit_schedules(losses.images_only, schedules))


def _challenger_cheaper(base: np.ndarray, challenger: np.ndarray) -> np.ndarray:
    """1 where the challenger is cheaper, 0 where the base is, 1/2 on a tie (both unreached included)."""
    return np.where(challenger < base, 1.0, np.where(challenger > base, 0.0, 0.5))


def _log_ratio(base: np.ndarray, challenger: np.ndarray) -> np.ndarray:
    """log(challenger / base) from log costs; NaN where neither side reaches the level, +-inf where one does not."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(base) & np.isinf(challenger), np.nan, challenger - base)


def _band_mean(ratios: np.ndarray) -> np.ndarray:
    """Mean log ratio over the band's levels where both sides reach (NaN where no level does)."""
    finite = np.isfinite(ratios)
    with np.errstate(invalid="ignore"):
        return np.where(finite.any(axis=1), np.where(finite, ratios, 0.0).sum(axis=1) / finite.sum(axis=1), np.nan)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Central ``confidence`` percentile interval of the log ratios (infinite ones kept: a side never reaching
    is the far end), NaN where no replicate has a value."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


@dataclass(frozen=True)
class Gap:
    """One claim at one width and one loss level (the tolerance line), and over the band below it."""

    probability: float  # share of replicates where the challenger (structured) is cheaper at the line (ties half)
    mc_error: float  # Monte Carlo standard error of ``probability``
    ratio: float  # challenger / base (structured / irregular) cost at the line on all images (nan: neither reaches)
    ratio_low: float
    ratio_high: float
    band_ratio: float  # geometric mean of the ratio over [0, line]
    band_low: float
    band_high: float
    base_cost: float
    challenger_cost: float
    seed_share: float  # share of the log ratio's interval width (squared) that the seed noise adds
    resamples: int
    reached: bool = True  # False where no side has a pruned model within the line on all images


def gap_at(fitted: FittedSplit, costs: np.ndarray, schedules: Sequence[Schedule], tolerance: float,
           levels: int, confidence: float, pair: tuple[str, str] = MAIN_PAIR) -> Gap:
    """The statistic at the line ``tolerance`` (a loss fraction), its band mean over ``levels`` levels in
    [0, tolerance], their intervals and the probability that the challenger side (``pair[1]``) is cheaper at the
    line than the base side (``pair[0]``)."""
    grid = np.linspace(0.0, tolerance, levels)
    base, challenger = pair
    by_side = {name: {side: side_log_cost(fits, costs, schedules, side, grid) for side in pair}
               for name, fits in (("point", fitted.point), ("both", fitted.both), ("images", fitted.images))}
    point = _log_ratio(by_side["point"][base], by_side["point"][challenger])[0]
    both = _log_ratio(by_side["both"][base], by_side["both"][challenger])
    images = _log_ratio(by_side["images"][base], by_side["images"][challenger])
    p = float(_challenger_cheaper(by_side["both"][base][:, -1], by_side["both"][challenger][:, -1]).mean())
    resamples = both.shape[0]
    low, high = _interval(both[:, -1], confidence)
    band_low, band_high = _interval(_band_mean(both), confidence)
    with np.errstate(invalid="ignore"):  # an interval with an infinite end has no width
        widths = [np.subtract(*_interval(r, confidence)[::-1]) for r in (images[:, -1], both[:, -1])]
    seed_share = 1 - (widths[0] / widths[1]) ** 2 if np.isfinite(widths).all() and widths[1] > 0 else float("nan")
    # Measured only where some side has a pruned step within the line on all images: where both sides only lean
    # from the unpruned model towards steps far beyond it, the interpolation says nothing about pruning.
    pruned_within = any((fitted.point[s.name][0, 1:] <= tolerance + ROUNDING).any() for s in schedules if s.side in pair)
    costs_at = {side: float(np.exp(by_side["point"][side][0, -1])) for side in pair}
    return Gap(probability=p, mc_error=float(np.sqrt(max(p * (1 - p), 1e-12) / resamples)),
               ratio=float(np.exp(point[-1])), ratio_low=float(np.exp(low)), ratio_high=float(np.exp(high)),
               band_ratio=float(np.exp(_band_mean(point[None, :])[0])), band_low=float(np.exp(band_low)),
               band_high=float(np.exp(band_high)), base_cost=costs_at[base], challenger_cost=costs_at[challenger],
               seed_share=float(max(0.0, seed_share)) if np.isfinite(seed_share) else float("nan"),
               resamples=resamples, reached=pruned_within and not np.isnan(point[-1]))


def two_sided(probability: float) -> float:
    """The two-sided p-value of "the sides cost the same at the line" from the share of structured-cheaper draws."""
    return float(min(1.0, 2 * min(probability, 1 - probability)))


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rule: which of a family's hypotheses are rejected at family-wise error ``alpha``
    (NaN p-values are not in the family)."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    rejected = [False] * len(p)
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        if p[index] > alpha / (len(tested) - rank):
            break
        rejected[index] = True
    return rejected


def family_verdicts(gaps: Sequence[Gap], confidence: float) -> list[str]:
    """Per width of one claim: holds / does not hold where Holm rejects "same cost" in that direction at
    family-wise 1 - ``confidence``, undecided where it does not, not reproduced where neither side reaches."""
    p_values = [two_sided(g.probability) if g.reached else float("nan") for g in gaps]
    rejected = holm(p_values, 1 - confidence)
    return [NOT_AT_BUDGET if not g.reached else (HOLDS if g.probability > 0.5 else DOES_NOT_HOLD) if r else UNDECIDED
            for g, r in zip(gaps, rejected)]


def near_cut(gaps: Sequence[Gap], confidence: float, margin: float = 3.0) -> list[bool]:
    """Per width: whether its two-sided p-value lies within ``margin`` Monte Carlo errors of the Holm threshold it
    is compared against (a verdict another bootstrap seed could turn); the thresholds are those of the final step
    order, alpha / (m - rank)."""
    p_values = np.array([two_sided(g.probability) if g.reached else np.nan for g in gaps])
    tested = np.flatnonzero(~np.isnan(p_values))
    out = [False] * len(gaps)
    for rank, index in enumerate(tested[np.argsort(p_values[tested], kind="stable")]):
        threshold = (1 - confidence) / (len(tested) - rank)
        out[index] = bool(abs(p_values[index] - threshold) <= margin * 2 * gaps[index].mc_error)
    return out


@dataclass
class SyntheticStudy:
    """Sizes of a simulated comparison (``simulate_decisions``): as the study's, with known true costs."""

    images: int = 10_000
    accuracy: float = 0.99  # the reference's
    disagreement: float = 0.006  # share of images on which a pruned model and the reference differ
    schedules_per_side: dict[str, int] = field(default_factory=lambda: {"irregular": 2, "structured": 4})
    steps: int = 6
    tolerance: float = 0.002
    seed_sd: float = 0.0003  # training-seed sd of a schedule's losses (a fraction)
    seed_dof: int = 2
    widths: int = 4  # one claim's family
    step_ratio: float = 1.45  # rates of consecutive steps near the line (the schedules' 40, 55, 80, 110, ...)
    knee: float = 0.5  # log rate over which the loss grows e-fold near the line: ~2 tolerances per e-fold rate, as measured


def _synthetic_losses(rng: np.random.Generator, study: SyntheticStudy, ratio: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """True losses and costs along each schedule. A schedule's loss rises as a knee in its log rate (as the study's
    do: flat, then steep): loss = tolerance * exp((rate past the line, in log) / knee), so it crosses the line
    where its log cost is the side's (1 for irregular, ``ratio`` for structured; other schedules of a side up to 1.35x
    dearer there). Steps ``step_ratio`` apart, the line falling anywhere between two of them."""
    losses, costs = [], []
    spacing = np.log(study.step_ratio)
    for side, count in study.schedules_per_side.items():
        at_line = np.log(1.0 if side == "irregular" else ratio)
        for index in range(count):
            line_cost = at_line + (0.0 if index == 0 else rng.uniform(0.0, 0.3))
            log_cost = line_cost + spacing * ((study.steps - 1) / 2 - np.arange(study.steps) + rng.uniform(-0.5, 0.5))
            losses.append(study.tolerance * np.exp((line_cost - log_cost) / study.knee))
            costs.append(np.exp(log_cost))
    return np.array(losses), costs


def simulate_decisions(study: SyntheticStudy, ratio: float, studies: int, resamples: int, confidence: float,
                       seed: int) -> np.ndarray:
    """Per simulated study, the family verdicts of one claim over ``study.widths`` independent widths when the
    structured side truly costs ``ratio`` times the irregular one at the line: (studies, widths) strings.

    Each width draws its own schedules, training-seed shifts and image outcomes (the reference's and each model's
    disagreeing images, at the observed disagreement rate and the true loss), estimates the seed variance from
    two models made at two seeds (``seed_dof`` degrees of freedom), and runs the study's rule on it."""
    rng = np.random.default_rng(seed)
    n = study.images
    out = []
    for s in range(studies):
        gaps = []
        for w in range(study.widths):
            true, costs = _synthetic_losses(rng, study, ratio)
            shift = rng.normal(0.0, study.seed_sd, size=len(true))
            reference = rng.random(n) < study.accuracy
            # row 0: the unpruned model, the reference itself, dearer than any step; shared by every schedule
            rows, schedules, all_costs = [reference.copy()], [], [float(np.max(np.concatenate(costs))) * 2]
            sides = [side for side, count in study.schedules_per_side.items() for _ in range(count)]
            for k, (loss, cost, side) in enumerate(zip(true + shift[:, None], costs, sides)):
                members = [0]
                for step_loss, step_cost in zip(loss, cost):
                    # images only the reference gets right (b) and only the model gets right (c): Poisson counts
                    # whose difference is the true loss in expectation, so the observed loss is noisy as a real one is
                    b = rng.poisson(n * max(0.0, study.disagreement / 2 + step_loss))
                    c = rng.poisson(n * study.disagreement / 2)
                    model = reference.copy()
                    right, wrong = np.flatnonzero(reference), np.flatnonzero(~reference)
                    model[rng.choice(right, size=min(b, right.size), replace=False)] = False
                    model[rng.choice(wrong, size=min(c, wrong.size), replace=False)] = True
                    members.append(len(rows))
                    rows.append(model)
                    all_costs.append(step_cost)
                schedules.append(Schedule(side, f"{side}{k}", tuple(members)))
            estimate = rng.normal(0.0, study.seed_sd, size=(study.seed_dof, 2))
            noise = seed_variance({str(i): pair for i, pair in enumerate(estimate)})
            losses = paired_losses(np.stack(rows), reference, schedules, noise, resamples, seed=1000 * s + w)
            fitted = FittedSplit.of(losses, schedules)
            gaps.append(gap_at(fitted, np.array(all_costs), schedules, study.tolerance, 5, confidence))
        out.append(family_verdicts(gaps, confidence))
    return np.array(out)
