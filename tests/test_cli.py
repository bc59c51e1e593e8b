"""``python -m study``: price, compress and save model files from the command line, as a newcomer runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import study
from study.core import models
from tests.conftest import REPO

VGG6 = ["--arch", "study.core.models:vgg6", "--input-shape", "1,28,28"]


def _study(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def vgg6_files(tmp_path_factory) -> dict[str, Path]:
    """A VGG-6 as a torch state dict (nested the way training scripts save it) and as safetensors."""
    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    net = models.build_model("vgg6")
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, folder / "vgg6.pt")
    save_file(net.state_dict(), str(folder / "vgg6.safetensors"))
    return {"pt": folder / "vgg6.pt", "safetensors": folder / "vgg6.safetensors", "folder": folder}


def test_price_of_a_state_dict_equals_the_api_and_scripts_read_csv_and_json(vgg6_files) -> None:
    folder = vgg6_files["folder"]
    run = _study("price", "vgg6.pt", "--bits", "4", *VGG6, "--json", cwd=folder)
    assert run.returncode == 0, run.stderr
    priced = json.loads(run.stdout)
    net = models.build_model("vgg6")
    net.load_state_dict(torch.load(vgg6_files["pt"], weights_only=True)["state_dict"])
    expected = study.price(net.eval(), weight_bits=4, input_shape=(1, 28, 28))
    assert priced["scheme"] == "dense" and priced["weight_bits"] == 4
    assert [row["total bits"] for row in priced["layers"]] == expected["total bits"].tolist()
    csv = _study("price", "vgg6.safetensors", "--bits", "4", *VGG6, "--csv", cwd=folder)
    assert csv.returncode == 0, csv.stderr
    assert pd.read_csv(pd.io.common.StringIO(csv.stdout))["total bits"].tolist() == expected["total bits"].tolist()


def test_compress_writes_a_file_whose_streams_are_its_price_and_save_and_price_read_it_back(vgg6_files) -> None:
    folder = vgg6_files["folder"]
    run = _study("compress", "vgg6.pt", "--scheme", "irregular", "--rate", "4", "--bits", "8", *VGG6,
                 "--out", "small.stm", "--json", cwd=folder)
    assert run.returncode == 0, run.stderr
    total = json.loads(run.stdout)["layers"][-1]
    header = study.costs.model_file.read_header(folder / "small.stm")
    assert header["stream_bits"] == total["total bits"] and f"{header['stream_bytes']:,} of them" in run.stderr
    again = _study("price", "small.stm", "--bits", "8", *VGG6, "--json", cwd=folder)  # the scheme read from the zeros
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["scheme"] == "irregular"
    assert json.loads(again.stdout)["layers"][-1]["total bits"] == total["total bits"]
    saved = _study("save", "small.stm", "--bits", "8", *VGG6, "--out", "copy.stm", cwd=folder)
    assert saved.returncode == 0, saved.stderr
    assert study.costs.model_file.read_header(folder / "copy.stm")["stream_bits"] == header["stream_bits"]
    published = REPO / "models" / "published" / "lenet5-mnist" / "admm-irregular-step4-8bit.stm"
    again = _study("save", str(published), "--out", "lenet5.stm", cwd=folder)  # a study model stays one: loads alone
    assert again.returncode == 0, again.stderr
    assert (folder / "lenet5.stm").read_bytes() == published.read_bytes()


def test_compress_to_an_nm_pattern_writes_an_nm_model(vgg6_files) -> None:
    folder = vgg6_files["folder"]
    run = _study("compress", "vgg6.pt", "--scheme", "2:4", "--rate", "1", "--bits", "8", *VGG6, "--out", "semi.stm",
                 "--json", cwd=folder)
    assert run.returncode == 0, run.stderr
    priced = json.loads(run.stdout)
    assert priced["scheme"] == "nm" and {r["format"].split(" ")[0] for r in priced["layers"][:-1]} >= {"dense", "nm_min"}
    from study.costs import model_file

    header = model_file.read_header(folder / "semi.stm")  # conv1 (one input channel x 3 x 3) stays dense
    assert header["scheme"] == "nm" and header["stream_bits"] == priced["layers"][-1]["total bits"]


def test_a_published_study_model_needs_no_architecture(tmp_path) -> None:
    published = REPO / "models" / "published" / "lenet5-mnist" / "admm-irregular-step4-8bit.stm"
    run = _study("price", str(published), cwd=tmp_path)  # its bits and input shape read from the file
    assert run.returncode == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1].split()
    assert run.stdout.startswith("scheme irregular, 8-bit weights") and last[0] == "total"
    assert str(study.costs.model_file.read_header(published)["stream_bits"]) in last  # the file's streams, priced


@pytest.mark.parametrize("args, message", [
    (["price", "vgg6.pt", "--bits", "8", "--input-shape", "1,28,28"], "vgg6.pt holds weights without their architecture: pass --arch"),
    (["price", "missing.pt", "--bits", "8", *VGG6], "missing.pt: no such file"),
    (["price", "vgg6.pt", "--bits", "8", "--arch", "study.core.models:lenet5", "--input-shape", "1,28,28"],
     "vgg6.pt does not fit --arch study.core.models:lenet5"),
    (["price", "vgg6.pt", "--bits", "9", *VGG6], "weight_bits=9; choose one of"),
    (["price", "vgg6.pt", "--arch", "study.core.models:vgg6"], "vgg6.pt does not say how it is stored: pass --bits and --input-shape"),
    (["price", "notes.pt", "--bits", "8", *VGG6], "notes.pt: not a state dict torch.load can read"),
    (["compress", "vgg6.pt", "--rate", "2", "--bits", "8", *VGG6], "compress needs --scheme"),
    (["price", "vgg6.pt", "--bits", "8", "--arch", "torchvision.models:nonexistent", "--input-shape", "1,28,28"],
     "--arch 'torchvision.models:nonexistent'"),
])
def test_bad_input_is_refused_naming_the_file_or_argument(vgg6_files, args, message) -> None:
    (vgg6_files["folder"] / "notes.pt").write_text("not a checkpoint")
    run = _study(*args, cwd=vgg6_files["folder"])
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
