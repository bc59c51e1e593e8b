"""Stage ``export@<baseline>``: the models the verdicts rest on, as files a fresh clone has and anyone can open.

Checkpoints are DVC outputs with no remote, so a fresh clone has every table but no model. This stage writes into
``models/published/<baseline>/``, which git keeps (a DVC output with ``cache: false``):

- every model on a frontier inside the compared band (from the dense accuracy down to the tolerance line on
  validation; per claim, width and side, as the frontier stage draws them),
- each scheme's picked ADMM model at every width, and the dense model at every width.

A compressed model goes into the study's model file (``study.costs.model_file``): the very streams the storage
count prices, so a file is as large as its storage row says, plus its header and unpruned tensors. The dense fp32
model goes into safetensors, the format the ecosystem shares weights in. ``index.csv`` lists each file: which
model it is, why it is published, its accuracies, the priced storage and the file's bytes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from study import paths
from study.contract import FULL_PRECISION_BITS
from study.core import artifacts, catalog, training
from study.core.params import Params
from study.costs import model_file
from study.progress import line, phase
from study.report import frontier as fr
from study.stages.common import StageResult, begin, finish, require
from study.stages.frontier import CLAIMS, candidates, snap_as_priced

METHOD_SLUGS = {"dense": "dense", "ADMM": "admm", "magnitude": "magnitude", "L1 filter": "l1filter"}
INDEX = "index.csv"


def file_name(method: str, scheme: str, step: int, weight_bits: int) -> str:
    """``admm-irregular-step2-4bit.stm``, ``dense-8bit.stm``; the dense fp32 model ``dense-fp32.safetensors``."""
    width = "fp32" if weight_bits == FULL_PRECISION_BITS else f"{weight_bits}bit"
    if method == "dense":
        return f"dense-{width}" + (".safetensors" if weight_bits == FULL_PRECISION_BITS else model_file.SUFFIX)
    return f"{METHOD_SLUGS[method]}-{scheme}-step{step}-{width}{model_file.SUFFIX}"


def frontier_reasons(table: pd.DataFrame, line_accuracy: float) -> dict[str, list[str]]:
    """Model id -> the claims on whose frontier it sits inside the compared band (validation accuracy at or above
    the tolerance line): the cheapest model of its side and width at its own accuracy. The dense model at a width
    belongs to both sides, as in the frontier stage."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for _, at_width in table.groupby("weight_bits"):
        for side in fr.SIDES:
            pool = at_width[at_width["side"].isin([side, fr.BOTH])]
            pool = pool[pool["val_accuracy"] >= line_accuracy - fr.ROUNDING]
            accuracy = pool["val_accuracy"].to_numpy(dtype=float)
            for claim, label in CLAIMS.items():
                costs = pool[claim].to_numpy(dtype=float)
                cheapest = fr.frontier(costs, accuracy, accuracy)  # the frontier at each model's own accuracy
                for model_id in pool["id"][costs <= cheapest]:
                    if label not in reasons[model_id]:
                        reasons[model_id].append(label)
    return reasons


def chosen(table: pd.DataFrame, selected: dict[str, int], line_accuracy: float) -> pd.DataFrame:
    """The models to publish, each with why: dense, picked (each scheme's selected ADMM step), frontier claims."""
    on_frontier = frontier_reasons(table, line_accuracy)
    rows = []
    for row in table.itertuples():
        why = []
        if row.method == "dense":
            why.append("dense")
        elif row.method == "ADMM" and selected.get(row.scheme) == row.step:
            why.append("picked")
        if on_frontier.get(row.id):
            why.append("frontier: " + ", ".join(on_frontier[row.id]))
        if why:
            rows.append({"id": row.id, "why": "; ".join(why)})
    return table.merge(pd.DataFrame(rows, columns=["id", "why"]), on="id")


def save_safetensors(state: dict[str, torch.Tensor], target: Path, metadata: dict[str, str]) -> None:
    """``state`` as a safetensors file, the same bytes for the same model (the file is committed with the results).

    safetensors writes its metadata in hash order, which changes from one call to the next; the header is written
    again with the metadata keys sorted: the same keys and values, so the same length, and the tensors stay where
    they are. The file is renamed into place only once complete."""
    partial = target.with_name(target.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    with partial.open("r+b") as file:
        length = int.from_bytes(file.read(8), "little")  # the format: an 8-byte header length, then the JSON header
        header = json.loads(file.read(length))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) > length:
            raise AssertionError(f"{target}: the sorted header takes {len(text)} bytes, safetensors wrote {length}")
        file.seek(8)
        file.write(text.ljust(length, b" "))  # safetensors pads its header with spaces too
    partial.replace(target)


def write_model(row: pd.Series, source: dict, model: str, dataset: str, folder: Path, params: Params) -> dict:
    """One published file for one frontier-stage model: its weights as the frontier stage priced them."""
    net = training.load_model(source["checkpoint"], model)[0]
    if row["quantized_by"] == "snapped":  # as the frontier stage made it: survivors snapped onto the levels
        snap_as_priced(net, int(row["weight_bits"]))
    name = file_name(row["method"], row["scheme"], int(row["step"]), int(row["weight_bits"]))
    target = folder / name
    if name.endswith(".safetensors"):
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        save_safetensors(state, target, {"model": model, "dataset": dataset, "scheme": "dense", "weight_bits": "32"})
        stream_bytes = None
    else:
        header = model_file.save(target, net, model=model, dataset=dataset, scheme=row["scheme"],
                                 weight_bits=int(row["weight_bits"]), index_bits=params.storage.index_bits,
                                 formats=params.storage.formats)
        priced_bits = round(float(row["storage_kb"]) * 8 * 1024)
        if header["stream_bits"] != priced_bits:  # the file must be what the frontier priced, bit for bit
            raise AssertionError(f"{name}: {header['stream_bits']} stream bits, the frontier priced {priced_bits}")
        stream_bytes = header["stream_bytes"]
    return {"file": name, "stream_bytes": stream_bytes, "file_bytes": target.stat().st_size}


def run(params: Params, layout: paths.Layout, baseline: str) -> StageResult:
    clock = begin(params)
    base = require(params.baselines, baseline, "baselines", "add the baseline or pick one that is listed")
    table = pd.read_csv(layout.read(paths.tables("frontier", baseline)) / "models.csv")
    sources = {f"m{i}": row for i, row in enumerate(candidates(layout, baseline, params))}  # the frontier's ids
    if len(sources) != len(table):
        raise AssertionError(f"the frontier stage judged {len(table)} models, {len(sources)} are at hand: run it again")
    selected = {s: int(catalog.read_record(layout.read(paths.results("prune", paths.item(baseline, s))))["selected_step"])
                for s in params.compare.schemes}
    dense = table[(table["method"] == "dense") & (table["weight_bits"] == FULL_PRECISION_BITS)].iloc[0]
    line_accuracy = float(dense["val_accuracy"]) - params.admm.tolerance_for(baseline) / 100
    published = chosen(table, selected, line_accuracy)
    folder = layout.write(paths.published(baseline))
    folder.mkdir(parents=True, exist_ok=True)
    line(f"{baseline}: {len(published)} of {len(table)} models to publish (dense, picked, on a frontier)")
    files = []
    with phase(f"export {baseline}"):
        for i, row in enumerate(published.to_dict("records"), start=1):
            files.append(write_model(pd.Series(row), sources[row["id"]], base.model, base.dataset, folder, params))
            if i % 10 == 0 or i == len(published):
                line(f"wrote {i}/{len(published)} files")
    index = pd.concat([pd.DataFrame(files), published.drop(columns=["id"]).reset_index(drop=True)], axis=1)
    index = index[["file", "method", "scheme", "step", "target_rate", "weight_bits", "quantized_by", "side", "pruning_rate",
                   "compact_pruning_rate", "val_accuracy", "test_accuracy", "storage_kb", "stream_bytes", "file_bytes", "why"]]
    artifacts.atomic_write_text(folder / INDEX, index.to_csv(index=False))
    record = {
        "model": base.model, "dataset": base.dataset, "scheme": "dense", "weight_bits": FULL_PRECISION_BITS,
        "test_accuracy": float(dense["test_accuracy"]), "val_accuracy": float(dense["val_accuracy"]), "pruning_rate": 1.0,
        "files": len(index), "total_bytes": int(index["file_bytes"].sum()), "folder": paths.published(baseline),
    }
    metrics = finish(layout, "export", baseline, record, clock, ("files", "total_bytes"), params.seed,
                     {"compare": params.compare.model_dump(), "tolerance_pp": params.admm.tolerance_for(baseline),
                      "storage": params.storage.model_dump()})
    return StageResult(metrics, {"index": index})
