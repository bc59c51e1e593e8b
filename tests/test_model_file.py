"""Model files: every scheme and width round-trips bit for bit, the streams are the storage count's bits, and a
damaged file is refused with its own message."""
from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import study
from study.compression import constraints, quantize
from study.core import models
from study.costs import encoding, model_file, storage
from tests import hostile_files

INPUT = models.INPUT_SHAPES["vgg6"]
SCHEMES = ("dense", "irregular", "filter", "channel", "column")


def _model(scheme: str, bits: int, seed: int = 0) -> torch.nn.Module:
    """A VGG-6 pruned 3x by ``scheme`` (every layer its scheme can prune) and put on its b-bit levels."""
    torch.manual_seed(seed)
    net = models.build_model("vgg6")
    layers = list(models.prunable_layers(net).items())
    with torch.no_grad():
        for i, (name, layer) in enumerate(layers):
            if scheme == "dense" or (scheme == "channel" and i == 0) or (scheme == "filter" and i == len(layers) - 1):
                continue  # conv1 has one input channel; the last layer's outputs are the classes
            units = constraints.group_count(layer.weight, scheme)
            layer.weight.copy_(constraints.project_pruned(layer.weight, scheme, max(1, units // 3))[0])
    if bits < 32:
        quantize.snap_to_levels(net, bits, keep_support=scheme != "dense")
    return net


@pytest.mark.parametrize("bits", [32, 8, 3, 1])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_and_width_round_trips_bit_for_bit(tmp_path, scheme: str, bits: int) -> None:
    net = _model(scheme, bits)
    path = tmp_path / f"{scheme}-{bits}{model_file.SUFFIX}"
    header = model_file.save(path, net, model="vgg6", dataset="fashion_mnist", scheme=scheme, weight_bits=bits)
    loaded = study.load(path)
    stored = storage.storable(net, scheme, INPUT)  # what the storage stage counts: compacted when structured
    expected, got = stored.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == torch.float32 and torch.equal(got[name], tensor), name
    counted = int(storage.model_storage(net, scheme, bits, INPUT)["total_bits"].sum())
    assert header["stream_bits"] == counted and header["stream_bytes"] == math.ceil(counted / 8)
    biases = sum(4 * t.numel() for n, t in expected.items() if not n.endswith("weight"))
    head = len(json.dumps(header, sort_keys=True).encode())
    assert path.stat().st_size == model_file.PREFIX.size + head + math.ceil(counted / 8) + biases
    x = torch.randn(2, *INPUT)
    assert torch.equal(loaded(x), stored.eval()(x))
    assert header["compacted"] == (scheme in ("filter", "channel", "column"))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("file") / "irregular-4.stm"
    model_file.save(path, _model("irregular", 4), model="vgg6", dataset="fashion_mnist", scheme="irregular", weight_bits=4)
    return path.read_bytes()


def _reread(tmp_path, data: bytes):
    path = tmp_path / "damaged.stm"
    path.write_bytes(data)
    return study.load(path)


def _shape_edit(header: dict) -> None:
    header["layers"][1]["shape"] = [8, 16, 3, 3]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-1], "is truncated: .* bytes, its header says"),
    (lambda d: d[:20], "is truncated: 20 bytes, shorter than the 46-byte prefix"),
    (lambda d: d[:-200] + bytes([d[-200] ^ 0x01]) + d[-199:], "fails its checksum"),
    (lambda d: d[:60] + bytes([d[60] ^ 0x20]) + d[61:], "fails its checksum|damaged header"),
    (lambda d: d[:8] + (2).to_bytes(2, "big") + d[10:], "is format version 2; this study reads version 1"),
    (lambda d: b"PK\x03\x04" + d[4:], "is not a study model file"),
    (lambda d: hostile_files.rewritten(d, _shape_edit), "shape mismatch in layer conv2: the stream holds \\(16, 16, 3, 3\\), the header "
                                           "says \\(8, 16, 3, 3\\)"),
    (lambda d: hostile_files.rewritten(d, lambda h: h.update(model="lenet5")), "shape mismatch in layer conv1: stored"),
])
def test_a_damaged_file_is_refused_with_its_own_message(tmp_path, written: bytes, damage, message: str) -> None:
    with pytest.raises(model_file.ModelFileError, match=message):
        _reread(tmp_path, damage(written))


def test_the_header_describes_the_file(tmp_path, written: bytes) -> None:
    path = tmp_path / "m.stm"
    path.write_bytes(written)
    header = model_file.read_header(path)
    assert (header["model"], header["scheme"], header["weight_bits"], header["format_version"]) == ("vgg6", "irregular", 4, 1)
    assert [layer["name"] for layer in header["layers"]] == list(models.prunable_layers(models.build_model("vgg6")))
    assert all(layer["format"] in ("dense", "rel_csc", "rel_csr", "csr", "bitmap") for layer in header["layers"])
    assert sum(layer["bits"] for layer in header["layers"]) == header["stream_bits"]


def _refusal_peak_bytes(tmp_path, data: bytes) -> tuple[str | None, int]:
    """The error's message (None when the file loads) and the peak bytes numpy and Python allocated meanwhile."""
    path = tmp_path / "crafted.stm"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        study.load(path)
        message = None
    except model_file.ModelFileError as error:
        message = str(error)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return message, peak


@pytest.mark.parametrize("name", hostile_files.CRAFTED)
def test_a_crafted_file_is_refused_before_it_allocates_what_it_declares(tmp_path, written: bytes, name: str) -> None:
    message, peak = _refusal_peak_bytes(tmp_path, hostile_files.crafted(written)[name])
    assert message is not None and "layer conv1" in message, message
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse it"


def test_every_crafted_case_is_built_as_described(written: bytes) -> None:
    """The crafted files carry the streams they claim (else the refusals above prove nothing)."""
    files = hostile_files.crafted(written)
    for name, data in files.items():
        header, payload = hostile_files.split(data)
        layer = header["layers"][0]
        first = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[:layer["bits"]]
        shape = model_file.encoding.stream_shape(np.packbits(first).tobytes(), layer["bits"])
        assert shape == ((2 ** 24, 1) if "2^24" in name else (2 ** 31, 1) if "2^31" in name else (65536, 65536))
        assert (list(shape) == layer["shape"]) == name.endswith("header agrees")
        model_file.parse(data)  # the checksum is right: only what the file declares is hostile


def _leaves(value, path=()):
    """Every (path, value) of a JSON document's scalars and containers."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _leaves(child, (*path, key))


def _replaced(document, path, new):
    if not path:
        return new
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return document


HOSTILE_VALUES = st.one_of(
    st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**24, 2**31, 2**32, 2**63, 2**64]), st.none(), st.booleans(),
    st.floats(allow_nan=False), st.text(max_size=8), st.lists(st.integers(-4, 2**32), max_size=5), st.just({}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_header_with_a_right_checksum_is_refused_cheaply(tmp_path, written: bytes, data) -> None:
    header, payload = hostile_files.split(written)
    leaves = list(_leaves(header))
    path, _ = data.draw(st.sampled_from(leaves), label="field")
    mutated = _replaced(json.loads(json.dumps(header)), path, data.draw(HOSTILE_VALUES, label="value"))
    message, peak = _refusal_peak_bytes(tmp_path, hostile_files.join(mutated, payload))
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB allocated for {path}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_stream_bytes_with_a_right_checksum_are_refused_cheaply(tmp_path, written: bytes, data) -> None:
    header, payload = hostile_files.split(written)
    starts = sorted({layer["bit_offset"] // 8 for layer in header["layers"]})
    at = data.draw(st.sampled_from(starts), label="layer") + data.draw(st.integers(0, 24), label="byte")
    value = data.draw(st.integers(0, 255), label="new byte")
    mutated = payload[:at] + bytes([value]) + payload[at + 1:]
    message, peak = _refusal_peak_bytes(tmp_path, hostile_files.join(header, mutated))
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB allocated for byte {at} = {value}"


def test_compacted_layers_that_do_not_fit_each_other_are_refused(tmp_path) -> None:
    """Each compacted layer may be smaller than the architecture's; a crafted file whose conv2 reads one channel fewer
    than conv1 makes passes every bound alone, and is refused with what is wrong instead of loading to fail later."""
    path = tmp_path / "filter.stm"
    model_file.save(path, _model("filter", 32), model="vgg6", dataset="fashion_mnist", scheme="filter", weight_bits=32)
    data = path.read_bytes()
    header, payload = hostile_files.split(data)
    index = [layer["name"] for layer in header["layers"]].index("conv2")
    conv2 = model_file.decode_weights(header, payload, model_file.registered_model(header))["conv2.weight"]
    narrower = encoding.encode(conv2[:, 1:].contiguous(), "structured", 32, scheme="filter")
    crafted = hostile_files.with_stream(data, index, (narrower.data, narrower.n_bits), list(narrower.shape))
    with pytest.raises(model_file.ModelFileError, match="its compacted layers do not fit together"):
        _reread(tmp_path, crafted)
