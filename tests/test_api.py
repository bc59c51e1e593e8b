"""The public verbs on the study's models and on real architectures nobody here wrote (torchvision's ResNet-18 and
MobileNetV2, random weights): prices equal the storage stage's and the model file's bits, compress reaches its rate
on its levels, the scheme is read from the zeros, bad arguments are refused with what to pass."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import yaml
from torchvision.models import mobilenet_v2, resnet18

import study
from study.compression import constraints
from study.core import models
from study.costs import encoding, model_file, pricing, storage
from tests.conftest import REPO

SMALL_IMAGE = (3, 32, 32)  # weights do not depend on the input size; MACs and compaction only need one


def _vgg6(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("vgg6").eval()


@pytest.mark.parametrize("scheme, bits", [("irregular", 8), ("filter", 4), ("channel", 3), ("column", 32)])
def test_a_compressed_study_model_is_priced_as_the_storage_stage_and_the_model_file_count_it(tmp_path, scheme, bits) -> None:
    small = study.compress(_vgg6(), scheme=scheme, rate=3, weight_bits=bits, input_shape=(1, 28, 28))
    table = study.price(small, weight_bits=bits, input_shape=(1, 28, 28))
    assert table.attrs["scheme"] == scheme and not table["quantized here"].any()  # compress left it on its levels
    counted = storage.model_storage(small, scheme, bits, (1, 28, 28))
    total = table.iloc[-1]
    assert table["layer"].tolist() == [*counted["layer"], "total"]
    assert total["total bits"] == counted["total_bits"].sum() == table["total bits"][:-1].sum()
    assert total["KB"] == pytest.approx(total["total bits"] / 8192)
    header = model_file.save(tmp_path / "m.stm", small, model="vgg6", dataset="fashion_mnist", scheme=scheme, weight_bits=bits)
    assert header["stream_bits"] == total["total bits"]  # the file's streams are the priced bits
    assert total["energy, weights on chip (nJ)"] <= total["energy, weights from DRAM (nJ)"]


@pytest.mark.parametrize("scheme", ["irregular", "filter", "channel", "column"])
def test_compress_reaches_its_rate_and_the_scheme_is_read_back_from_the_zeros(scheme) -> None:
    net = _vgg6()
    before = [p.detach().clone() for p in net.parameters()]
    small = study.compress(net, scheme=scheme, rate=2, input_shape=(1, 28, 28))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())), "compress changed the model it was given"
    rate = models.count_weights(small) / models.count_nonzero_weights(small)
    assert rate == pytest.approx(2, rel=0.05)
    assert pricing.detect_scheme(small) == scheme and pricing.detect_scheme(net) == "dense"
    # each pruned layer is the exact projection of its own weights (the explorer's one-shot rule)
    for name, layer in models.prunable_layers(small).items():
        original = models.prunable_layers(net)[name].weight.detach()
        kept = constraints.group_count(layer.weight, scheme) if scheme != "irregular" else None
        if scheme == "irregular":
            k = int(layer.weight.ne(0).sum())
            assert torch.equal(layer.weight, constraints.project_pruned(original, scheme, k)[0])
        else:
            zero = encoding.group_view(*encoding.as_matrix(layer.weight.detach()), scheme) == 0
            k = kept - int(zero.all(axis=1).sum())
            assert torch.equal(layer.weight, constraints.project_pruned(original, scheme, k)[0])


def test_a_float_model_priced_at_8_bits_is_snapped_in_a_copy_and_the_table_says_so() -> None:
    net = _vgg6()
    before = [p.detach().clone() for p in net.parameters()]
    table = study.price(net, weight_bits=8, input_shape=(1, 28, 28))
    assert table.attrs["scheme"] == "dense" and table["quantized here"].all()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())), "price changed the model it was given"
    assert set(table["format"][:-1]) == {"dense"}
    assert table.iloc[-1]["value bits"] == 8 * models.count_weights(net)
    assert not study.price(net, weight_bits=32, input_shape=(1, 28, 28))["quantized here"].any()


@pytest.fixture(scope="module")
def resnet18_compressed() -> dict[str, tuple[torch.nn.Module, int]]:
    """torchvision's ResNet-18 (random weights) one-shot compressed: irregular 8x at 4 bits, filter 2x at fp32."""
    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10).eval()
    return {"irregular": (study.compress(net, scheme="irregular", rate=8, weight_bits=4, input_shape=SMALL_IMAGE), 4),
            "filter": (study.compress(net, scheme="filter", rate=2, input_shape=SMALL_IMAGE), 32)}


@pytest.mark.parametrize("scheme", ["irregular", "filter"])
def test_resnet18_priced_with_its_residual_channels_compacted_saved_and_loaded_into_a_fresh_module(
        tmp_path, resnet18_compressed, scheme: str) -> None:
    small, bits = resnet18_compressed[scheme]
    table = study.price(small, weight_bits=bits, input_shape=SMALL_IMAGE)
    total = table.iloc[-1]
    assert table.attrs["scheme"] == scheme and not table["quantized here"].any()
    if scheme == "irregular":
        assert len(table) == len(models.prunable_layers(small)) + 1
        assert total["non-zero weights"] == models.count_nonzero_weights(small)
        assert total["index bits"] + total["filler bits"] + total["pointer bits"] > total["index bound (bits)"] > 0
    else:
        stored = storage.storable(small, "filter", SMALL_IMAGE)  # residual sums and batch norms compacted together
        assert set(table["format"][:-1]) == {"structured"}
        assert total["non-zero weights"] == models.count_weights(stored) < models.count_nonzero_weights(small)
    header = study.save(small, tmp_path / "r18.stm", weight_bits=bits, input_shape=SMALL_IMAGE)
    assert header["stream_bits"] == total["total bits"] and header["stream_bytes"] == -(-int(total["total bits"]) // 8)
    with pytest.raises(model_file.ModelFileError, match="outside the study's registry.*into=module"):
        study.load(tmp_path / "r18.stm")
    fresh = resnet18(weights=None, num_classes=10)
    loaded = study.load(tmp_path / "r18.stm", into=fresh)
    assert loaded is fresh
    x = torch.randn(2, *SMALL_IMAGE)
    with torch.no_grad():  # compaction sums fewer zero terms: equal up to float summation order
        assert torch.allclose(loaded(x), small(x), atol=1e-5)
    with pytest.raises(model_file.ModelFileError, match="has 10 classes .*, the module given has 100"):
        study.load(tmp_path / "r18.stm", into=resnet18(weights=None, num_classes=100))
    with pytest.raises(model_file.ModelFileError, match=r"shape mismatch in layer conv1: stored \((64|32), 3, 7, 7\), "
                                                        r"ResNet has \(64, 1, 7, 7\)"):
        grey = resnet18(weights=None, num_classes=10)
        grey.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        study.load(tmp_path / "r18.stm", into=grey)


def test_mobilenet_v2_depthwise_convolutions_are_priced_and_unreachable_rates_refused() -> None:
    torch.manual_seed(0)
    net = mobilenet_v2(weights=None, num_classes=10).eval()
    small = study.compress(net, scheme="irregular", rate=4, weight_bits=8, input_shape=SMALL_IMAGE)
    table = study.price(small, weight_bits=8, input_shape=SMALL_IMAGE).set_index("layer")
    depthwise = [n for n, m in models.prunable_layers(net).items() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(table.loc[n, "total bits"] > 0 for n in depthwise)
    # depthwise convolutions tie their input channels to their outputs: filter pruning cannot remove enough channels
    with pytest.raises(ValueError, match="rate 2.0 is out of reach"):
        study.compress(net, scheme="filter", rate=2, input_shape=SMALL_IMAGE)


@pytest.mark.parametrize("call, message", [
    (lambda net: study.price(net, weight_bits=9, input_shape=(1, 28, 28)), r"weight_bits=9; choose one of"),
    (lambda net: study.price(net, weight_bits=8, input_shape=(1, 28, 28), scheme="rows"), r"scheme='rows'; choose one of"),
    (lambda net: study.price(net, weight_bits=8, input_shape=()), r"input_shape=\(\): one input without its batch"),
    (lambda net: study.price(torch.nn.ReLU(), weight_bits=8, input_shape=(1, 28, 28)), r"ReLU has no nn.Conv2d or nn.Linear"),
    (lambda net: study.compress(net, scheme="dense", rate=2, input_shape=(1, 28, 28)), r"scheme='dense'; choose one of"),
    (lambda net: study.compress(net, scheme="irregular", rate=0.5, input_shape=(1, 28, 28)), r"rate=0.5: a pruning rate"),
])
def test_bad_arguments_are_refused_with_what_to_pass(call, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call(_vgg6())


def test_the_default_energy_table_is_the_studys() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert pricing.DEFAULT_TABLE_PJ == params["energy"]["table_pj"]


def test_the_readme_example_runs_as_written(tmp_path) -> None:
    code = re.search(r"## Your own model\n.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"KB dense fp32 -> [\d,]+ KB stored, indices included", run.stdout) and "rel_c" in run.stdout


def test_a_model_with_layers_the_study_does_not_price_is_priced_for_the_rest_and_lists_them() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.Flatten(), torch.nn.LayerNorm(24),
                              torch.nn.Linear(24, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    table = study.price(net, weight_bits=8, input_shape=(2, 8))
    assert table["layer"].tolist() == ["3", "5", "total"]
    assert table.attrs["not_priced"] == [{"module": "0", "type": "Conv1d", "parameters": 2 * 4 * 3 + 4}]
    assert table.iloc[-1]["value bits"] == 8 * (24 * 8 + 8 * 3)


def test_the_your_own_model_notebook_prices_a_torchvision_model_and_draws_where_its_bits_go(tmp_path) -> None:
    import papermill

    executed = tmp_path / "run.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "your-own-model.ipynb"), str(executed), kernel_name="python3",
                               cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=300,
                               parameters={"architecture": "torchvision.models:squeezenet1_1", "input_shape": [3, 64, 64],
                                           "scheme": "column", "rate": 4.0, "weight_bits": 4, "out_root": str(tmp_path)})
    for ext in ("png", "svg"):
        assert (tmp_path / "your-own-model" / ext / f"where_bits_go.{ext}").stat().st_size > 10_000
    text = executed.read_text()
    assert "<th>quantized here</th>" in text and "<td>structured</td>" in text  # both tables shown; column pruning stored
