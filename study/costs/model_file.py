"""A compressed model as a real file: every layer in the bit-exact stream the storage count prices, loadable.

The storage tables are computed from ``study.costs.encoding``'s streams; this module writes those very streams to
disk, so a stored size is a file a reader can ``ls -l`` and load back. Layout (all integers big-endian):

| part | bytes | what |
|---|---|---|
| prefix | 46 | magic ``STUDYMDL``, format version (uint16), header length (uint32), sha256 of header and payload |
| header | as given | UTF-8 JSON: model, dataset, classes, input shape, scheme, weight bits, compacted or not; per layer its
  name, shape, format, index width, bit offset and length in the stream; per tensor its name, shape and bytes |
| streams | ceil(bits / 8) | every conv/FC weight, one stream after another with no padding between them: together
  exactly the storage stage's bit count, rounded up to whole bytes |
| tensors | 4 per value | the parameters no scheme prunes (biases, batch-norm), float32 little-endian |

A structured model is stored compacted (removed filters and channels leave smaller dense layers), as the storage
stage counts it; ``load`` rebuilds it from the registered architecture with those smaller layers. Decoding checks
the magic, the version, the lengths and the checksum before it reads a weight, and each stream's shape against its
header, so a truncated, altered or mismatched file is refused with what is wrong instead of loading silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from study.compression import coupling
from study.contract import SPARSE_FORMATS, STRUCTURED_SCHEMES
from study.core import models
from study.costs import encoding, storage

MAGIC = b"STUDYMDL"
VERSION = 1
PREFIX = struct.Struct(">8sHI32s")  # magic, version, header length, sha256(header + payload)
SUFFIX = ".stm"  # the extension of a study model file


class ModelFileError(ValueError):
    """A model file that cannot be read as it claims to be; the message says what is wrong and with which file."""


def _pack_streams(streams: Sequence[encoding.Encoded]) -> tuple[bytes, list[int]]:
    """The layers' bit streams back to back (no byte padding between them) and each one's bit offset."""
    bits, offsets, at = [], [], 0
    for stream in streams:
        bits.append(np.unpackbits(np.frombuffer(stream.data, dtype=np.uint8))[:stream.n_bits])
        offsets.append(at)
        at += stream.n_bits
    return (np.packbits(np.concatenate(bits)).tobytes() if at else b""), offsets


def _unpruned_tensors(net: nn.Module, weights: set[str]) -> dict[str, torch.Tensor]:
    """Every float tensor of the state but the stored weights (biases, batch-norm parameters and statistics)."""
    return {name: t for name, t in net.state_dict().items() if name not in weights and t.is_floating_point()}


def encode_model(net: nn.Module, *, model: str, dataset: str, scheme: str, weight_bits: int,
                 index_bits: int | None = None, formats: Sequence[str] = SPARSE_FORMATS) -> bytes:
    """The file's bytes for ``net`` (a model of the registry ``model``): each layer in the format and index width the
    storage stage picks (``study.costs.storage.layer_storage``), so the streams are the bits it counts."""
    input_shape = models.INPUT_SHAPES[model]
    stored = storage.storable(net, scheme, input_shape)
    layers = models.prunable_layers(stored)
    encoded, described = [], []
    for name, layer in layers.items():
        choice = storage.layer_storage(layer.weight, scheme, weight_bits, index_bits, formats)
        stream = encoding.encode(layer.weight.detach(), choice["format"], weight_bits, choice["index_bits"] or 4, scheme)
        if stream.n_bits != choice["total_bits"]:  # the counted and the written stream are the same by construction
            raise AssertionError(f"layer {name}: stream of {stream.n_bits} bits, counted {choice['total_bits']}")
        encoded.append(stream)
        described.append({"name": name, "shape": list(stream.shape), "format": choice["format"],
                          "index_bits": choice["index_bits"], "bits": stream.n_bits, "breakdown": stream.breakdown})
    streams, offsets = _pack_streams(encoded)
    for entry, offset in zip(described, offsets):
        entry["bit_offset"] = offset
    tensors, blobs, at = [], [], len(streams)
    for name, tensor in _unpruned_tensors(stored, {f"{n}.weight" for n in layers}).items():
        blob = tensor.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        tensors.append({"name": name, "shape": list(tensor.shape), "byte_offset": at, "bytes": len(blob)})
        blobs.append(blob)
        at += len(blob)
    payload = streams + b"".join(blobs)
    header = {
        "format_version": VERSION, "model": model, "dataset": dataset, "num_classes": _classes(stored),
        "input_shape": list(input_shape), "scheme": scheme, "weight_bits": weight_bits,
        "compacted": scheme in STRUCTURED_SCHEMES, "layers": described,
        "stream_bits": sum(e["bits"] for e in described), "stream_bytes": len(streams),
        "tensors": tensors, "payload_bytes": len(payload),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return PREFIX.pack(MAGIC, VERSION, len(head), hashlib.sha256(head + payload).digest()) + head + payload


def _classes(net: nn.Module) -> int:
    return int(list(models.prunable_layers(net).values())[-1].weight.shape[0])


def save(path: str | Path, net: nn.Module, **kwargs: Any) -> dict[str, Any]:
    """Write ``net`` to ``path`` (see ``encode_model`` for the arguments); returns the header written."""
    data = encode_model(net, **kwargs)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)  # a killed writer never leaves half a file under the real name
    return parse(data, str(target))[0]


def parse(data: bytes, source: str = "model file") -> tuple[dict[str, Any], bytes]:
    """The header and the payload of a file's bytes, once magic, version, lengths and checksum are right."""
    if len(data) < PREFIX.size or not data.startswith(MAGIC):
        if data[:len(MAGIC)] == MAGIC[:len(data)]:
            raise ModelFileError(f"{source} is truncated: {len(data)} bytes, shorter than the {PREFIX.size}-byte prefix")
        raise ModelFileError(f"{source} is not a study model file (it does not start with {MAGIC!r})")
    _, version, head_length, checksum = PREFIX.unpack_from(data)
    if version != VERSION:
        raise ModelFileError(f"{source} is format version {version}; this study reads version {VERSION}: "
                             "export the model again with this version")
    head_end = PREFIX.size + head_length
    if len(data) < head_end:
        raise ModelFileError(f"{source} is truncated: {len(data)} bytes, its header alone ends at byte {head_end}")
    try:
        header = json.loads(data[PREFIX.size:head_end])
        expected = head_end + int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError):
        raise ModelFileError(f"{source} has a damaged header (not the JSON it was written as)") from None
    if len(data) != expected:
        raise ModelFileError(f"{source} is {'truncated' if len(data) < expected else 'too long'}: {len(data)} bytes, "
                             f"its header says {expected}")
    if hashlib.sha256(data[PREFIX.size:]).digest() != checksum:
        raise ModelFileError(f"{source} fails its checksum: bytes were altered or damaged after it was written")
    return header, data[head_end:]


def _stream(payload: bytes, layer: dict[str, Any]) -> tuple[bytes, int]:
    """One layer's stream cut out of the packed streams, as ``encoding.decode`` reads it."""
    start, count = int(layer["bit_offset"]), int(layer["bits"])
    first, last = start // 8, math.ceil((start + count) / 8)
    bits = np.unpackbits(np.frombuffer(payload[first:last], dtype=np.uint8))[start - 8 * first:start - 8 * first + count]
    return np.packbits(bits).tobytes(), count


def decode_weights(header: dict[str, Any], payload: bytes, source: str = "model file") -> dict[str, torch.Tensor]:
    """Every stored tensor by its state-dict name: layer weights decoded, the rest read as float32."""
    out: dict[str, torch.Tensor] = {}
    for layer in header["layers"]:
        try:
            weight = encoding.decode(*_stream(payload, layer))
        except (ValueError, encoding.EncodingError) as error:
            raise ModelFileError(f"{source}: layer {layer['name']} does not decode: {error}") from None
        if list(weight.shape) != list(layer["shape"]):
            raise ModelFileError(f"{source}: shape mismatch in layer {layer['name']}: the stream holds "
                                 f"{tuple(weight.shape)}, the header says {tuple(layer['shape'])}")
        out[f"{layer['name']}.weight"] = torch.from_numpy(weight.copy())
    for tensor in header["tensors"]:
        start = int(tensor["byte_offset"])
        values = np.frombuffer(payload[start:start + int(tensor["bytes"])], dtype="<f4")
        if values.size != math.prod(tensor["shape"]):
            raise ModelFileError(f"{source}: shape mismatch in {tensor['name']}: {values.size} values for shape "
                                 f"{tuple(tensor['shape'])}")
        out[tensor["name"]] = torch.from_numpy(values.astype(np.float32).reshape(tensor["shape"]))
    return out


def build(header: dict[str, Any], tensors: dict[str, torch.Tensor], source: str = "model file") -> nn.Module:
    """The registered architecture with exactly the stored tensors; compacted layers rebuilt at their stored sizes."""
    try:
        net = models.build_model(header["model"], int(header["num_classes"]))
    except ValueError as error:
        raise ModelFileError(f"{source}: {error}") from None
    layers = models.prunable_layers(net)
    if header["compacted"] and not coupling.is_plain_chain(net):
        raise ModelFileError(f"{source}: a compacted {header['model']} joins channels (batch norm or residual sums); "
                             "this loader rebuilds compacted plain chains only")
    for entry in header["layers"]:
        name = entry["name"]
        if name not in layers:
            raise ModelFileError(f"{source}: layer {name} is not a layer of {header['model']} "
                                 f"(its layers: {list(layers)})")
        weight, bias = tensors[f"{name}.weight"], tensors.get(f"{name}.bias")
        if tuple(weight.shape) != tuple(layers[name].weight.shape):
            if not header["compacted"]:
                raise ModelFileError(f"{source}: shape mismatch in layer {name}: stored {tuple(weight.shape)}, "
                                     f"{header['model']} has {tuple(layers[name].weight.shape)}")
            net.set_submodule(name, coupling.dense_layer(layers[name], weight, bias))
    try:
        missing = net.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # a tensor of another size than the architecture's
        raise ModelFileError(f"{source}: shape mismatch with {header['model']}: {error}") from None
    wanted = [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")]
    if wanted or missing.unexpected_keys:
        raise ModelFileError(f"{source}: shape mismatch with {header['model']}: missing {wanted}, "
                             f"unexpected {missing.unexpected_keys}")
    return net.eval()


def load(path: str | Path) -> nn.Module:
    """The torch module stored in a study model file, with exactly its stored weights (see the module's docstring)."""
    source = str(path)
    header, payload = parse(Path(path).read_bytes(), source)
    return build(header, decode_weights(header, payload, source), source)


def read_header(path: str | Path) -> dict[str, Any]:
    """What a model file says about itself (after the same checks as ``load``), without building the model."""
    return parse(Path(path).read_bytes(), str(path))[0]
