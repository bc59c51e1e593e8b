"""The explorer's model: which checkpoints exist, a LeNet-5 trained on the spot when none does, and one
model held in memory with its validation images so that each choice answers within about a second.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from study import paths
from study.core import data, models, training
from study.core.params import Params, ParamsError, load_params
from study.demo import DEMO_ROOT
from study.explore import layer as layer_view
from study.progress import phase, quiet

DEMO_PARAMS = f"{DEMO_ROOT}/params.yaml"  # written by study.demo
# A checkpoint's kind from its path below models/<baseline>/ (the pipeline's layout, study.paths).
PATTERNS = {"dense.pt": "dense", "prune-*/selected.pt": "pruned", "quantize-*/model.pt": "quantized"}


@dataclass(frozen=True)
class Candidate:
    """A checkpoint the explorer can open, and the parameters file whose data and validation split it was made with."""

    label: str
    checkpoint: Path
    params_file: Path


PUBLISHED_INDEX = "index.csv"  # written by the export stage beside the files


def published_label(baseline: str, row: dict[str, Any]) -> str:
    """How the report names a published model: 'published: lenet5-mnist, ADMM irregular step 2 (40x), 8-bit (picked)'."""
    width = "fp32" if int(row["weight_bits"]) == 32 else f"{int(row['weight_bits'])}-bit"
    if row["scheme"] == "dense":
        what = f"dense, {width}"
    else:
        what = f"{row['method']} {row['scheme']} step {int(row['step'])} ({float(row['target_rate']):g}x), {width}"
    why = "picked" if "picked" in str(row["why"]) else "frontier" if "frontier" in str(row["why"]) else ""
    return f"published: {baseline}, {what}" + (f" ({why})" if why and row["scheme"] != "dense" else "")


def published_models(params_file: Path, root: Path = paths.REPO_ROOT) -> list[Candidate]:
    """The study's published files (``models/published/<baseline>/``, in git: a fresh clone has them), compared
    baselines in order; in each the dense models first, then each scheme's pick, then the other frontier models."""
    import pandas as pd

    try:
        compared = load_params(params_file).compare.baselines
    except ParamsError:
        return []
    found = []
    for baseline in compared:
        folder = root / paths.published(baseline)
        if not (folder / PUBLISHED_INDEX).is_file():
            continue
        index = pd.read_csv(folder / PUBLISHED_INDEX)
        rank = index["scheme"].ne("dense").astype(int) * (1 + (~index["why"].str.contains("picked")).astype(int))
        index = index.assign(rank=rank).sort_values(["rank", "weight_bits", "scheme", "step"], ascending=[True, False, True, True],
                                                    kind="stable")
        found += [Candidate(published_label(baseline, row), folder / row["file"], params_file)
                  for row in index.to_dict("records") if (folder / row["file"]).is_file()]
    return found


def load_any(checkpoint: Path) -> tuple[torch.nn.Module, str, str, dict[str, Any] | None]:
    """(model, model name, dataset, the model file's header or None) for a pipeline checkpoint (``.pt``), a study
    model file (``.stm``) or a dense model in safetensors."""
    from study.costs import model_file

    if checkpoint.suffix == model_file.SUFFIX:
        header = model_file.read_header(checkpoint)
        return model_file.load(checkpoint), header["model"], header["dataset"], header
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(checkpoint), framework="pt") as opened:
            meta = opened.metadata() or {}
        if "model" not in meta or "dataset" not in meta:
            raise ValueError(f"{checkpoint} has no model and dataset in its metadata: not a file the study published")
        net = models.build_model(meta["model"])
        net.load_state_dict(load_file(str(checkpoint)))
        return net, meta["model"], meta["dataset"], {**meta, "scheme": "dense", "weight_bits": 32}
    net, payload = training.load_model(checkpoint)
    return net, payload["model"], payload["dataset"], None


def _label(source: str, checkpoint: Path, root: Path) -> str:
    relative = checkpoint.relative_to(root / "models")
    baseline, rest = relative.parts[0], "/".join(relative.parts[1:])
    if rest == "dense.pt":
        what = "dense"
    elif rest.startswith("prune-"):
        what = f"{rest.split('/')[0].removeprefix('prune-')}, pruned"
    else:
        scheme_bits = rest.split("/")[0].removeprefix("quantize-")
        scheme, bits = scheme_bits.rsplit("-", 1)
        what = f"{scheme}, {bits}-bit"
    return f"{source}: {baseline} ({what})"


def find_models(params_file: str | Path = "params.yaml", out_root: str | Path = "tmp/explore",
                published_root: str | Path = ".") -> list[Candidate]:
    """The study's published model files first (a fresh clone has them), then every checkpoint of the pipeline
    (``models/``), of the demo (``demo/models/``) and of this explorer's own runs (``<out_root>/models/``); in each,
    the compared baselines first, dense models before the others."""
    found: list[Candidate] = published_models(paths.from_root(params_file), paths.from_root(published_root))
    sources = [("study", paths.REPO_ROOT, paths.from_root(params_file)),
               ("demo", paths.from_root(DEMO_ROOT), paths.from_root(DEMO_PARAMS)),
               (str(out_root), paths.from_root(out_root), paths.from_root(params_file))]
    seen: set[Path] = set()
    for source, root, params in sources:
        if not params.is_file():
            continue
        try:
            compared = load_params(params).compare.baselines
        except ParamsError as exc:  # e.g. a demo made by an older version: say so, list the others
            print(f"explorer: skipping the {source} models, their parameters do not load: {exc}")
            continue
        first = {name: i for i, name in enumerate(compared)}
        for pattern in PATTERNS:
            checkpoints = sorted((root / "models").glob(f"*/{pattern}"),
                                 key=lambda p: (first.get(p.relative_to(root / "models").parts[0], len(first)), str(p)))
            for checkpoint in checkpoints:
                if checkpoint.resolve() not in seen:
                    seen.add(checkpoint.resolve())
                    found.append(Candidate(_label(source, checkpoint, root), checkpoint, params))
    return found


def quick_model(params_file: str | Path = "params.yaml", out_root: str | Path = "tmp/explore", epochs: int = 1) -> Candidate:
    """A dense model of the first compared baseline trained for ``epochs`` (about a minute for LeNet-5 on
    MNIST on 2 cores), kept under ``<out_root>/models/<baseline>-quick/`` so the next session reuses it."""
    params_path = paths.from_root(params_file)
    params = load_params(params_path)
    baseline = params.compare.baselines[0]
    base = params.baselines[baseline]
    root = paths.from_root(out_root)
    checkpoint = root / paths.dense_checkpoint(f"{baseline}-quick")
    if not checkpoint.is_file():
        splits = _splits(params, base.dataset)
        training.seed_everything(params.seed)
        net = models.build_model(base.model)
        config = dataclasses.replace(base.train_config(params.seed), epochs=epochs)
        with phase(f"explorer: training {base.model} on {base.dataset} for {epochs} epoch(s)"):
            training.fit(net, splits["train"], splits["val"], config)
        training.save_model(checkpoint, net, base.model, base.dataset)
    return Candidate(_label(str(out_root), checkpoint, root), checkpoint, params_path)


def _splits(params: Params, dataset: str) -> dict[str, data.Split]:
    return data.load_dataset(dataset, paths.from_root(params.data.root), params.data.val_size,
                             split_seed=params.seed, check_sha256=params.data.check_sha256)


def choose(model: str, params_file: str | Path = "params.yaml", out_root: str | Path = "tmp/explore",
           published_root: str | Path = ".") -> Candidate:
    """``auto``: the first dense model found (published, study, demo, then this explorer's), else a quick
    model; ``quick``: the quick model; otherwise a label from :func:`find_models` or a checkpoint path."""
    if model == "quick":
        return quick_model(params_file, out_root)
    found = find_models(params_file, out_root, published_root)
    if model == "auto":
        dense = (c for c in found if c.label.endswith("(dense)") or c.label.endswith("dense, fp32"))
        return next(dense, None) or quick_model(params_file, out_root)
    for candidate in found:
        if model == candidate.label:
            return candidate
    path = paths.from_root(model)
    if path.is_file():
        return Candidate(f"{model}", path, paths.from_root(params_file))
    raise FileNotFoundError(f"model={model!r} is neither 'auto', 'quick', a checkpoint file nor one of "
                            f"{[c.label for c in found]}; run `make demo` or `make paper` to make checkpoints")


class Explorer:
    """One model in memory: its layers, their MAC positions, the energy settings and a validation subset."""

    def __init__(self, candidate: Candidate, val_images: int = 2000) -> None:
        if isinstance(val_images, bool) or not isinstance(val_images, int) or val_images < 1:
            raise ValueError(f"val_images={val_images!r}: the explorer measures accuracy on that many validation images; "
                             "give a whole number of at least 1 (2000 answers within about a second on 2 cores)")
        self.candidate = candidate
        self.model, self.model_name, self.dataset, self.stored = load_any(Path(candidate.checkpoint))
        self.model.eval()
        self.params = load_params(candidate.params_file)
        self.val = _splits(self.params, self.dataset)["val"].subset(val_images)
        self.layers = models.prunable_layers(self.model)
        # rates are against the registered, unpruned architecture: a published structured model is compacted
        self.dense_weights = models.count_weights(models.build_model(self.model_name))
        macs = models.count_macs(self.model, models.INPUT_SHAPES[self.model_name])
        self.positions = {name: macs[name] // m.weight.numel() for name, m in self.layers.items()}
        if self.params.energy is None:
            raise KeyError(f"{candidate.params_file} has no `energy` section; the explorer prices layers with it")
        self.energy_table = dict(self.params.energy.table_pj)
        self.energy_config = self.params.energy.config()
        self.baseline_accuracy = self.accuracy({})

    @property
    def largest_layer(self) -> str:
        return max(self.layers, key=lambda n: self.layers[n].weight.numel())

    @property
    def busiest_conv_layer(self) -> str:
        """The conv layer with the most MACs (falls back to the largest layer in a network without conv)."""
        convs = [n for n, m in self.layers.items() if isinstance(m, torch.nn.Conv2d)]
        return max(convs, key=lambda n: self.positions[n] * self.layers[n].weight.numel()) if convs else self.largest_layer

    @torch.no_grad()
    def accuracy(self, replaced: dict[str, torch.Tensor]) -> float:
        """Validation accuracy (fraction) with some layers' weights replaced, restored afterwards."""
        saved = {name: self.layers[name].weight.detach().clone() for name in replaced}
        try:
            for name, weight in replaced.items():
                self.layers[name].weight.copy_(weight)
            with quiet():
                return training.evaluate(self.model, self.val)["accuracy"]
        finally:
            for name, weight in saved.items():
                self.layers[name].weight.copy_(weight)

    def weights_total(self) -> int:
        return models.count_weights(self.model)

    def nonzero_total(self) -> int:
        return models.count_nonzero_weights(self.model)

    @functools.lru_cache(maxsize=64)
    def view(self, choice: layer_view.Choice) -> dict[str, Any]:
        """What the explorer shows for ``choice``: :func:`study.explore.layer.breakdown` plus the accuracy of
        the whole model with that layer replaced (one shot, no retraining) and the model's overall rate."""
        if choice.layer not in self.layers:
            raise ValueError(f"layer={choice.layer!r}; layers of {self.model_name}: {list(self.layers)}")
        weight = self.layers[choice.layer].weight.detach()
        view = layer_view.breakdown(weight, choice, self.positions[choice.layer], self.energy_table, self.energy_config)
        kept_elsewhere = self.nonzero_total() - int(torch.count_nonzero(weight))
        view["model_rate"] = self.dense_weights / max(kept_elsewhere + int(torch.count_nonzero(view["quantized"])), 1)
        view["val_accuracy"] = self.accuracy({choice.layer: view["quantized"]})
        view["baseline_val_accuracy"] = self.baseline_accuracy
        view["val_images"] = len(self.val)
        return view
