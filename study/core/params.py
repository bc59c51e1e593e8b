"""The typed schema of ``params.yaml``, validated before any stage does work.

Every error names the key path (e.g. ``baselines.lenet5-mnist.model``), the bad value and what is
allowed. pydantic does the type and range checks; registry lookups (model and dataset names) are
validators here so the allowed values always match what the code really has.

CLI: ``python -m study.core.params [params.yaml]`` validates a file and prints a summary.

Only light modules are imported at the top (the vocabulary, the model and dataset registries): every
stage imports this schema, and each DVC stage depends on the modules it imports.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.compression.constraints import group_count
from study.contract import ALLOCATIONS, NM_SCHEME, PRUNING_SCHEMES, QUANTIZED_BITS, SPARSE_FORMATS, nm_pattern
from study.contract import STORABLE_BITS as WEIGHT_BITS
from study.core.data import DATASETS, dataset_spec
from study.core.errors import ParamsError
from study.core.models import INPUT_SHAPES, MODELS, NUM_CLASSES, build_model, prunable_layers
from study.core.vision_data import VISION_DATASETS
from study.compression import coupling
from study.compression.pruning import ALL_LAYERS, expand_density_weights, space_density_weights
from study.core.training import AUGMENTATIONS, LR_SCHEDULES, TrainConfig


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default); infinities and NaN are refused
    # wherever a number is read (an `lr: .inf` would train to NaN and fail much later, naming no key).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def dataset_shape(name: str) -> tuple[int, int, int]:
    """(channels, height, width) of a data set's images: the MNIST family is 1x28x28."""
    return VISION_DATASETS[name].input_shape if name in VISION_DATASETS else (1, 28, 28)


def training_images(name: str) -> int:
    return VISION_DATASETS[name].train_images if name in VISION_DATASETS else dataset_spec(name).train_images


class DataParams(_Strict):
    root: str = Field("data", description="data root, relative to the repository root unless absolute")
    val_size: int = Field(10000, ge=1, description="training images held out for model selection")
    check_sha256: bool = Field(True, description="verify the raw files' checksums (tests use tiny synthetic files)")
    workers: int = Field(2, ge=0, description="DataLoader worker processes of data sets streamed from disk (ImageNet)")


class CompareParams(_Strict):
    """What the comparison covers; dvc.yaml's stages iterate over these lists, each written only here."""

    baselines: list[str] = Field(min_length=1, description="baselines pruned, quantized and compared")
    schemes: list[str] = Field(min_length=1, description="pruning schemes compared")
    weight_bits: list[int] = Field(min_length=1, description="bit widths every model is quantized to (1 = binary)")
    nm_baselines: list[str] = Field(default_factory=list, description="the compared baselines where nm is among the "
                                    "schemes, else empty: the ASP baseline's stages iterate over it (dvc.yaml lists no "
                                    "condition, so the list says which)")

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, schemes: list[str]) -> list[str]:
        valid = [*PRUNING_SCHEMES, NM_SCHEME]
        unknown = [s for s in schemes if s not in valid]
        if unknown or len(set(schemes)) != len(schemes):
            raise ValueError(f"schemes {schemes} must be distinct pruning schemes; valid: {valid}")
        if "irregular" not in schemes:
            raise ValueError("the comparison needs 'irregular' (every structured scheme is compared against it)")
        return schemes

    @field_validator("weight_bits")
    @classmethod
    def _bits(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if b not in QUANTIZED_BITS]
        if bad or len(set(bits)) != len(bits):
            raise ValueError(f"weight bit widths {bits} must be distinct values of {list(QUANTIZED_BITS)} (1 = binary)")
        return bits


class RuntimeParams(_Strict):
    """How stages use the machine. Results depend on the thread count (float sums split differently),
    so it is a parameter of the training stages: the same params give the same metrics on any machine."""

    threads: int = Field(2, ge=1, description="torch intra-op threads of every stage")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where training, ADMM and retraining compute: auto = CUDA when torch sees a GPU, else CPU")
    amp: bool = Field(False, description="bfloat16 mixed precision of forward passes on CUDA (ignored on the CPU)")
    processes: int = Field(
        1, ge=1, description="processes per machine for the training stages; > 1 starts them with torchrun "
                             "(DistributedDataParallel: one per GPU, or gloo on CPUs)")


class ReportParams(_Strict):
    """Which layers the report's figures draw."""

    mask_layer: str | None = Field("conv2", description="F1: the layer whose masks are drawn (null: each network's largest)")
    histogram_layer: str | None = Field(
        "fc1", description="F8: the layer whose weight distributions are drawn (null: each network's largest)")


class VerdictParams(_Strict):
    """Stage frontier@<baseline>: how the claims' verdicts are drawn along the frontiers (study.report.frontier)."""

    resamples: int = Field(2000, ge=100, description="paired bootstrap replicates over the validation (and test) images")
    confidence: float = Field(0.95, gt=0.5, le=1.0, description="share of replicates a verdict needs; below it: undecided")
    band: float = Field(0.90, gt=0.0, lt=1.0, description="central share of the replicates the frontier figure shades")
    levels: int = Field(21, ge=2, le=201, description="accuracy levels from the dense accuracy down to the tolerance line")


class GapParams(_Strict):
    """Stage verdicts@<baseline>: the claims decided by the cost gap between the sides (study.report.gap)."""

    resamples: int = Field(20000, ge=200, description="two-level bootstrap replicates (seed noise, then images) per split")
    check_seed: int = Field(1, ge=0, description="a second bootstrap seed (not `seed`): the verdicts it gives are recorded beside")
    refine_factor: int = Field(4, ge=1, description="where a verdict on `split` lies within 3 Monte Carlo errors of its cut, "
                                                    "the split is drawn again with this many times the replicates (1: never)")
    split: Literal["val", "test"] = Field("test", description="the split the verdict is read on (test: no choice saw it)")
    tolerance_factors: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5],
                                           description="tolerances the verdicts are drawn at, times the study's; 1 among them")

    @field_validator("tolerance_factors")
    @classmethod
    def _factors(cls, factors: list[float]) -> list[float]:
        if 1.0 not in factors or factors != sorted(set(factors)) or min(factors) <= 0:
            raise ValueError(f"tolerance_factors {factors} must increase, be positive and include 1.0 (the study's tolerance)")
        return factors


class SpreadParams(_Strict):
    """Stage seeds@<baseline>: the dense baseline and the headline pruned models again at other seeds."""

    seeds: list[int] = Field(default_factory=list, description="seeds besides `seed` (init, batch order, validation "
                             "split); empty: the stage only tabulates the study's own seed")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds {seeds} must be distinct and >= 0")
        return seeds


class BaselineParams(_Strict):
    """One dense baseline: which model on which dataset, and how it is trained."""

    model: str
    dataset: str
    epochs: int = Field(ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    lr_schedule: str = "cosine"
    augment: Literal[AUGMENTATIONS] = Field("none", description="hflip: random left-right mirroring of training images")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; valid models: {sorted(MODELS)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in VISION_DATASETS:
            try:
                dataset_spec(value)
            except ValueError:
                raise ValueError(f"unknown dataset {value!r}; valid datasets: {sorted([*DATASETS, *VISION_DATASETS])}") from None
        return value

    @model_validator(mode="after")
    def _model_reads_the_data(self) -> "BaselineParams":
        expected = dataset_shape(self.dataset)
        if INPUT_SHAPES[self.model] != expected:
            raise ValueError(f"model {self.model!r} reads images of shape {INPUT_SHAPES[self.model]}, but {self.dataset} "
                             f"has {expected}; pick a model for this data set")
        if self.dataset in VISION_DATASETS and NUM_CLASSES[self.model] != VISION_DATASETS[self.dataset].num_classes:
            raise ValueError(f"model {self.model!r} has {NUM_CLASSES[self.model]} classes, {self.dataset} "
                             f"{VISION_DATASETS[self.dataset].num_classes}")
        return self

    @field_validator("lr_schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        if value not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {value!r}; valid: {list(LR_SCHEDULES)}")
        return value

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule,
            seed=seed,
            augment=self.augment,
        )


class ADMMParams(_Strict):
    """Shared ADMM settings: the dynamic-rho schedule and the SGD of the W-step and of retraining."""

    rho: float = Field(0.01, gt=0)
    rho_growth: float = Field(1.5, ge=1)
    rho_max: float = Field(1.0, gt=0)
    updates_per_epoch: int = Field(2, ge=1)
    lr: float = Field(0.01, gt=0, description="constant during the ADMM phase")
    retrain_lr: float = Field(0.01, gt=0, description="start of the cosine schedule of masked retraining")
    batch_size: int = Field(64, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    tolerance_pp: float | dict[str, float] = Field(
        0.2, description="selection: val accuracy >= baseline val - this (points); one number, or one per compared "
        "baseline (a smaller or less accurate validation split is noisier)")

    stop_tolerance_factor: float = Field(
        1.0, ge=1.0, description="a schedule stops after its misses clearly outside this many times the tolerance "
        "(> 1: the pools reach past the line, so verdicts at a looser tolerance have steps beyond it)")

    @field_validator("tolerance_pp")
    @classmethod
    def _non_negative(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v < 0 for v in values):
            raise ValueError(f"tolerance_pp {value} must be >= 0")
        return value

    def tolerance_for(self, baseline: str) -> float:
        """The accuracy tolerance of one baseline (validated to exist for every compared baseline)."""
        return self.tolerance_pp[baseline] if isinstance(self.tolerance_pp, dict) else self.tolerance_pp

    def stop_tolerance_for(self, baseline: str) -> float:
        """The tolerance a schedule's stop rule reads (points): the baseline's, times ``stop_tolerance_factor``."""
        return self.stop_tolerance_factor * self.tolerance_for(baseline)

    @model_validator(mode="after")
    def _rho_cap(self) -> "ADMMParams":
        if self.rho_max < self.rho:
            raise ValueError(f"rho_max ({self.rho_max}) must be >= rho ({self.rho})")
        return self

    def admm_config(self) -> "ADMMConfig":
        from study.compression.admm import ADMMConfig  # here, not at the top: validating params needs no ADMM code

        return ADMMConfig(self.rho, self.rho_growth, self.rho_max, self.updates_per_epoch)

    # ``augment``: the baseline's own (BaselineParams.augment): a model is fine-tuned on the images it was trained on
    def admm_train(self, epochs: int, seed: int, augment: str = "none") -> TrainConfig:
        return TrainConfig(epochs, self.batch_size, self.lr, self.momentum, self.weight_decay, "constant", seed, augment)

    def retrain(self, epochs: int, seed: int, augment: str = "none") -> TrainConfig:
        return TrainConfig(epochs, self.batch_size, self.retrain_lr, self.momentum, self.weight_decay, "cosine", seed, augment)


class PruneSchedule(_Strict):
    """Progressive pruning of one model with one scheme: overall rates in order, and the per-layer split."""

    rates: list[float] = Field(default_factory=list, description="overall weight pruning rates (total / non-zero), "
                               "increasing; an N:M schedule's are its patterns' M / N")
    patterns: list[str] = Field(default_factory=list, description="scheme nm: the N:M pattern of each step, in order "
                                "(e.g. [2:4, 1:4, 1:8]); each keeps a smaller share than the one before")
    density_weights: dict[str, float] = Field(
        min_length=1, description="relative kept fraction per pruned layer; layers not listed stay dense; '*': every "
        "layer the scheme can prune"
    )
    allocation: Literal[ALLOCATIONS] = Field(
        "density", description="density: fixed per-layer split by density_weights; magnitude: one global magnitude "
        "threshold over the listed layers at each step (irregular only; density weights then only name the layers)")
    min_keep: float = Field(0.0, ge=0, le=1, description="magnitude allocation: floor of any layer's kept fraction")
    admm_epochs: int = Field(ge=1)
    retrain_epochs: int = Field(ge=0)
    stop_after_misses: int = Field(2, ge=1, description="stop after this many steps in a row clearly outside the accuracy "
                                   "tolerance (the paired lower bound of the validation loss above it)")
    drop_dead: bool = Field(False, description="after each step's projection also prune the weights that cannot change "
                            "the output (unread units; readers of a unit that only emits its bias, folded into their bias)")
    regrow: bool = Field(False, description="each ADMM phase constrains all weights, so an earlier step's zeros may "
                         "come back; false: they stay zero (the support only shrinks)")

    @field_validator("rates")
    @classmethod
    def _increasing(cls, rates: list[float]) -> list[float]:
        if any(r < 1 for r in rates) or rates != sorted(set(rates)):
            raise ValueError(f"rates {rates} must be >= 1 and strictly increasing")
        return rates

    @model_validator(mode="before")
    @classmethod
    def _patterns_set_the_rates(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("patterns"):
            return data
        try:
            derived = [m / n for n, m in (nm_pattern(p) for p in data["patterns"])]
        except ValueError as error:
            raise ValueError(f"patterns: {error}") from None
        if derived != sorted(set(derived)) or min(derived) <= 1:
            raise ValueError(f"patterns {data['patterns']}: each must keep a smaller share than the one before "
                             f"(their rates M / N {derived} must increase from above 1)")
        if data.get("rates") and [float(r) for r in data["rates"]] != derived:
            raise ValueError(f"rates {data['rates']} and patterns {data['patterns']}: an N:M schedule's rates are its "
                             f"patterns' M / N ({derived}); leave rates out")
        return {**data, "rates": derived}

    @model_validator(mode="after")
    def _some_rate(self) -> "PruneSchedule":
        if not self.rates:
            raise ValueError("rates: give at least one pruning rate (or, for scheme nm, patterns)")
        return self

    @field_validator("density_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in weights.items() if not v > 0}
        if bad:
            raise ValueError(f"density weights must be > 0, got {bad}")
        return weights


class QuantizeParams(_Strict):
    """Quantization of one baseline's dense and pruned models: ADMM onto the levels, then masked mapping."""

    admm_epochs: int = Field(ge=0, description="ADMM epochs towards the levels (0: snap by masked mapping only)")
    mapping_fractions: list[float] = Field(min_length=1, description="cumulative fractions snapped per round, ending at 1.0")
    mapping_epochs: int = Field(ge=0, description="retraining epochs after each masked-mapping round but the last")
    binary_epochs: int = Field(ge=1, description="straight-through-estimator epochs of the fully binarized dense model")
    snap_within_pp: float | None = Field(
        None, ge=0, description="keep the model snapped onto the levels without training when its val accuracy is at "
                                "most this many points below its source's; null: always train (either way the better "
                                "of snapped and trained on val is kept)")

    @field_validator("mapping_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if fractions != sorted(set(fractions)) or fractions[0] <= 0 or fractions[-1] != 1.0:
            raise ValueError(f"mapping_fractions {fractions} must increase within (0, 1] and end at 1.0")
        return fractions


class StorageParams(_Strict):
    """Storage accounting: which sparse formats irregular layers may use and how wide their run-length fields are."""

    index_bits: int | None = Field(None, ge=1, le=16, description="run-length bits of the relative formats; null: best per layer")
    formats: list[str] = Field(default_factory=lambda: list(SPARSE_FORMATS), min_length=1)
    break_even_weight_bits: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 16, 32], min_length=1)
    break_even_index_bits: list[int] = Field(default_factory=lambda: [2, 3, 4, 5, 6, 7, 8], min_length=1)

    @field_validator("formats")
    @classmethod
    def _formats(cls, formats: list[str]) -> list[str]:
        unknown = [f for f in formats if f not in SPARSE_FORMATS]
        if unknown:
            raise ValueError(f"unknown sparse formats {unknown}; valid: {list(SPARSE_FORMATS)}")
        return formats

    @field_validator("break_even_weight_bits")
    @classmethod
    def _weight_bits(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if b not in WEIGHT_BITS]
        if bad:
            raise ValueError(f"weight bit widths {bad} are not storable; valid: {list(WEIGHT_BITS)}")
        return bits

    @field_validator("break_even_index_bits")
    @classmethod
    def _index_bits(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if not 1 <= b <= 16]
        if bad:
            raise ValueError(f"index bit widths {bad} must lie in 1..16")
        return bits


class EnergyParams(_Strict):
    """The energy model's table (pJ) and assumptions; see study/costs/energy.py for how each is used."""

    table_pj: dict[str, float]
    lanes: int = Field(64, ge=1, description="parallel lanes / PEs of the array")
    activation_bits: int = Field(16, ge=1, le=32)
    accumulator_bits: int = Field(32, ge=1, le=64)
    batch: int = Field(1, ge=1, description="inferences sharing one DRAM read of the weights")
    on_chip_kb: float = Field(256.0, ge=0, allow_inf_nan=False,
                              description="on-chip weight memory (KB) of the second memory assumption")

    @field_validator("table_pj", mode="before")
    @classmethod
    def _table(cls, table: object) -> dict[str, float]:
        if not isinstance(table, dict):
            raise ValueError("must map each component to its energy in pJ")
        from study.costs.energy import check_table  # here: only a run with an energy table needs the energy model

        return check_table(table)

    def config(self) -> "EnergyConfig":
        from study.costs.energy import EnergyConfig

        return EnergyConfig(self.lanes, self.activation_bits, self.accumulator_bits, self.batch, self.on_chip_kb)


class LatencyParams(_Strict):
    """CPU latency measurement: batches, timing budget, threads, and the synthetic sparsity sweep."""

    batches: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    min_run_time_s: float = Field(0.5, gt=0, description="torch.utils.benchmark time budget per measurement")
    threads: int = Field(1, ge=1)
    sweep_layers: dict[str, list[int]] = Field(min_length=1, description="name: [rows, cols, input columns]")
    sweep_sparsities: list[float] = Field(min_length=2)

    @field_validator("batches")
    @classmethod
    def _batches(cls, batches: list[int]) -> list[int]:
        if any(b < 1 for b in batches):
            raise ValueError(f"batch sizes {batches} must be >= 1")
        return batches

    @field_validator("sweep_layers")
    @classmethod
    def _layers(cls, layers: dict[str, list[int]]) -> dict[str, list[int]]:
        bad = {k: v for k, v in layers.items() if len(v) != 3 or any(d < 1 for d in v)}
        if bad:
            raise ValueError(f"each sweep layer needs [rows, cols, input columns] >= 1, got {bad}")
        return layers

    @field_validator("sweep_sparsities")
    @classmethod
    def _sparsities(cls, sparsities: list[float]) -> list[float]:
        if sparsities != sorted(set(sparsities)) or not all(0 <= s < 1 for s in sparsities):
            raise ValueError(f"sparsities {sparsities} must increase within [0, 1)")
        return sparsities


class Params(_Strict):
    seed: int = Field(0, ge=0)
    data: DataParams = DataParams()
    baselines: dict[str, BaselineParams] = Field(min_length=1)
    compare: CompareParams
    admm: ADMMParams = ADMMParams()
    prune: dict[str, dict[str, PruneSchedule]] = Field(default_factory=dict)
    quantize: dict[str, QuantizeParams] = Field(default_factory=dict)
    storage: StorageParams = StorageParams()
    energy: EnergyParams | None = None
    latency: LatencyParams | None = None
    report: ReportParams = ReportParams()
    runtime: RuntimeParams = RuntimeParams()
    spread: SpreadParams = SpreadParams()
    verdicts: VerdictParams = VerdictParams()
    gap: GapParams = GapParams()

    @model_validator(mode="after")
    def _check_seed(self) -> "Params":
        if self.gap.check_seed == self.seed:
            raise ValueError(f"gap.check_seed: {self.gap.check_seed} is also `seed`; the check needs another bootstrap seed")
        return self

    @model_validator(mode="after")
    def _comparison(self) -> "Params":
        for baseline in self.compare.baselines:
            if baseline not in self.baselines:
                raise ValueError(f"compare.baselines: {baseline!r} is not a baseline; valid: {sorted(self.baselines)}")
            missing = [s for s in self.compare.schemes if s not in self.prune.get(baseline, {})]
            if missing:
                raise ValueError(f"compare: prune.{baseline} has no schedule for {missing}; add one per compared scheme")
            for scheme, schedule in self.prune.get(baseline, {}).items():
                if (scheme == NM_SCHEME) != bool(schedule.patterns):
                    raise ValueError(f"prune.{baseline}.{scheme}: " + ("an N:M schedule needs patterns (e.g. [2:4, 1:4, 1:8])"
                                     if scheme == NM_SCHEME else "patterns belong to the nm scheme only; give rates"))
            if baseline not in self.quantize:
                raise ValueError(f"compare: quantize.{baseline} is missing; add the baseline's quantization settings")
            layers = prunable_layers(build_model(self.baselines[baseline].model))
            for key in ("mask_layer", "histogram_layer"):
                if getattr(self.report, key) is not None and getattr(self.report, key) not in layers:
                    raise ValueError(f"report.{key}: {baseline}'s model has no layer {getattr(self.report, key)!r}; "
                                     f"its layers: {list(layers)}")
        expected = list(self.compare.baselines) if NM_SCHEME in self.compare.schemes else []
        if self.compare.nm_baselines != expected:
            raise ValueError(f"compare.nm_baselines: {self.compare.nm_baselines}; with {'nm' if expected else 'no nm'} among "
                             f"compare.schemes it must be {expected} (the ASP baseline's stages iterate over it)")
        if isinstance(self.admm.tolerance_pp, dict):
            missing = [b for b in self.compare.baselines if b not in self.admm.tolerance_pp]
            unknown = [b for b in self.admm.tolerance_pp if b not in self.baselines]
            if missing or unknown:
                raise ValueError(f"admm.tolerance_pp: give one value per compared baseline (missing {missing}, "
                                 f"not a baseline {unknown}), or one number for all")
        return self

    @model_validator(mode="after")
    def _other_seeds(self) -> "Params":
        if self.seed in self.spread.seeds:
            raise ValueError(f"spread.seeds: {self.spread.seeds} repeats the study's own seed {self.seed}; "
                             "list only other seeds (the study's models are the first row of the spread)")
        return self

    @model_validator(mode="after")
    def _validation_split(self) -> "Params":
        for name, baseline in self.baselines.items():
            images = training_images(baseline.dataset)
            if self.data.val_size >= images:
                raise ValueError(f"data.val_size: {self.data.val_size} holds out every training image of {name}'s "
                                 f"{baseline.dataset} ({images}); use fewer (the CPU profile holds out 10000)")
        return self

    @model_validator(mode="after")
    def _prune_targets(self) -> "Params":
        for baseline in self.quantize:
            if baseline not in self.baselines:
                raise ValueError(f"quantize.{baseline}: no such baseline; valid: {sorted(self.baselines)}")
        for baseline, schedules in self.prune.items():
            if baseline not in self.baselines:
                raise ValueError(f"prune.{baseline}: no such baseline; valid: {sorted(self.baselines)}")
            model_name = self.baselines[baseline].model
            model = build_model(model_name)
            layers = prunable_layers(model)
            for scheme, schedule in schedules.items():
                where = f"prune.{baseline}.{scheme}"
                if scheme not in (*PRUNING_SCHEMES, NM_SCHEME):
                    raise ValueError(f"{where}: unknown pruning scheme {scheme!r}; valid schemes: {[*PRUNING_SCHEMES, NM_SCHEME]}")
                if schedule.allocation == "magnitude" and scheme != "irregular":
                    raise ValueError(f"{where}.allocation: 'magnitude' ranks single weights and applies to irregular "
                                     "pruning only; use 'density' for structured schemes")
                for layer in schedule.density_weights:
                    if layer == ALL_LAYERS:
                        continue
                    if layer not in layers:
                        raise ValueError(f"{where}.density_weights.{layer}: the model has no layer {layer!r}; its layers: {list(layers)}")
                    # an N:M step prunes every named layer whose inputs split into groups of M: no unit count to check
                    if scheme != NM_SCHEME and group_count(layers[layer].weight, scheme) == 1:
                        raise ValueError(
                            f"{where}.density_weights.{layer}: {layer} has a single {scheme} unit and cannot be "
                            f"{scheme}-pruned; remove it from density_weights (it then stays dense)"
                        )
                if coupling.uses_spaces(model, scheme):  # channels joined by residual sums or batch norm
                    try:
                        expanded = expand_density_weights(model, scheme, schedule.density_weights, INPUT_SHAPES[model_name])
                        space_density_weights(model, scheme, expanded, INPUT_SHAPES[model_name])
                    except ValueError as exc:
                        raise ValueError(f"{where}.density_weights: {exc}") from None
        return self

    @model_validator(mode="after")
    def _baseline_names(self) -> "Params":
        for name, baseline in self.baselines.items():
            expected = f"{baseline.model}-{baseline.dataset}"
            if name != expected:
                raise ValueError(
                    f"baselines.{name}: entry name must be '<model>-<dataset>' = {expected!r}, "
                    "so every stage can find its baseline by name"
                )
        return self


def _format(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid value(s):"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (remove it, or check its spelling against params.yaml's documented keys)"
        given = f" (got {err['input']!r})" if err["type"] not in ("missing",) and not isinstance(err["input"], dict) else ""
        lines.append(f"  {path}: {message}{given}")
    return "\n".join(lines)


def validate(section: type[BaseModel], values: dict[str, Any], source: str) -> Any:
    """Validate ``values`` against ``section``; raise ``ParamsError`` listing every bad key."""
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        raise ParamsError(_format(exc, source)) from None


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where an unquoted 2:4 is the base-60 integer 124; YAML 1.2 (and DVC, which writes
    params.yaml back unquoted when `dvc exp run -S` sets a value) reads it as the string "2:4". This loader resolves
    integers as 1.2 does, so an N:M pattern stays a pattern whoever wrote the file."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """A params file's values (integers as YAML 1.2 reads them: ``_Yaml12Loader``)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} does not exist; the repository ships one at its top level")
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    return validate(Params, raw, str(path))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "params.yaml"
    try:
        params = load_params(path)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: valid ({len(params.baselines)} baseline(s): {', '.join(params.baselines)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
