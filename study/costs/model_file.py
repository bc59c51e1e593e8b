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
stage counts it; ``load`` rebuilds it from the registered architecture with those smaller layers.

Files travel between people, so reading one trusts nothing it declares. Before a weight is read: the magic, the
version, the lengths and the checksum; the header's fields and types (a checksum is no defence: anyone can
recompute it); every span in the header against the payload; every layer and tensor shape against the registered
architecture (equal, or no larger in any dimension where the file is compacted); and each stream's own shape
against its header. The decoder then checks every count a stream declares against the bits it has left. So
nothing is allocated by a declared size the file's bytes and the architecture do not back, and a truncated,
altered, crafted or mismatched file is refused with a ``ModelFileError`` that says what is wrong.
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
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from torch import nn

from study.compression import coupling
from study.contract import SCHEMES, SPARSE_FORMATS, STORABLE_BITS, STRUCTURED_SCHEMES
from study.core import models
from study.costs import encoding, storage

MAGIC = b"STUDYMDL"
VERSION = 1
PREFIX = struct.Struct(">8sHI32s")  # magic, version, header length, sha256(header + payload)
SUFFIX = ".stm"  # the extension of a study model file


class ModelFileError(ValueError):
    """A model file that cannot be read as it claims to be; the message says what is wrong and with which file."""


# The header's schema: every field the reader relies on, with its type and range (strict: "8" is not 8, true is not 1).
class _Fields(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _LayerEntry(_Fields):
    name: StrictStr
    shape: list[StrictInt] = Field(min_length=2, max_length=4)
    format: StrictStr
    index_bits: StrictInt | None
    bits: StrictInt = Field(ge=0)
    bit_offset: StrictInt = Field(ge=0)


class _TensorEntry(_Fields):
    name: StrictStr
    shape: list[StrictInt] = Field(max_length=8)
    byte_offset: StrictInt = Field(ge=0)
    bytes: StrictInt = Field(ge=0)


class _Header(_Fields):
    format_version: StrictInt
    model: StrictStr
    dataset: StrictStr
    num_classes: StrictInt = Field(ge=1)
    input_shape: list[StrictInt]
    scheme: StrictStr
    weight_bits: StrictInt
    compacted: StrictBool
    registered: StrictBool = True  # files written before foreign architectures were storable hold registered ones
    layers: list[_LayerEntry] = Field(min_length=1)
    stream_bits: StrictInt = Field(ge=0)
    stream_bytes: StrictInt = Field(ge=0)
    tensors: list[_TensorEntry]
    payload_bytes: StrictInt = Field(ge=0)


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
                 index_bits: int | None = None, formats: Sequence[str] = SPARSE_FORMATS,
                 input_shape: Sequence[int] | None = None) -> bytes:
    """The file's bytes for ``net``: each layer in the format and index width the storage stage picks
    (``study.costs.storage.layer_storage``), so the streams are the bits it counts. ``model`` names a registered
    architecture (its input shape is known), or, with ``input_shape``, any module's architecture: such a file holds
    no architecture and loads into a module its reader builds (``load(path, into=...)``)."""
    registered = input_shape is None
    if registered and model not in models.INPUT_SHAPES:
        raise ValueError(f"model {model!r} is not registered ({sorted(models.INPUT_SHAPES)}): pass input_shape")
    input_shape = tuple(models.INPUT_SHAPES[model] if registered else input_shape)
    stored = storage.storable(net, scheme, input_shape)
    layers = models.prunable_layers(stored)
    encoded, described = [], []
    for name, layer in layers.items():
        choice = storage.layer_storage(layer.weight, scheme, weight_bits, index_bits, formats)
        # an N:M layer's own pattern (the stream records it; the model's scheme "nm" names none)
        stream = encoding.encode(layer.weight.detach(), choice["format"], weight_bits, choice["index_bits"] or 4,
                                 choice.get("pattern") or scheme)
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
        **({} if registered else {"registered": False}),  # a registered model's file keeps its bytes of before
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
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ModelFileError(f"{source} has a damaged header (not the JSON it was written as)") from None
    if len(data) != expected:
        raise ModelFileError(f"{source} is {'truncated' if len(data) < expected else 'too long'}: {len(data)} bytes, "
                             f"its header says {expected}")
    if hashlib.sha256(data[PREFIX.size:]).digest() != checksum:
        raise ModelFileError(f"{source} fails its checksum: bytes were altered or damaged after it was written")
    check_header(header, source)
    return header, data[head_end:]


def check_header(header: Any, source: str = "model file") -> None:
    """The header's fields have the types and ranges the reader relies on, and every span it declares lies in
    the payload: layer streams back to back from bit 0, tensors after them, four bytes per float32 value."""
    try:
        fields = _Header.model_validate(header)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ModelFileError(f"{source}: header field {where}: {first['msg']} (got {first['input']!r:.80})") from None
    problems = []
    if fields.scheme not in SCHEMES or fields.weight_bits not in STORABLE_BITS:
        problems.append(f"scheme {fields.scheme!r} at {fields.weight_bits} bits is not one this study writes "
                        f"(schemes {list(SCHEMES)}, bits {list(STORABLE_BITS)})")
    at = 0
    for layer in fields.layers:
        if layer.bit_offset != at or len(layer.shape) == 3 or min(layer.shape) < 1:
            problems.append(f"layer {layer.name!r} declares shape {layer.shape} at bit {layer.bit_offset}; "
                            f"a 2-D or 4-D weight whose stream starts at bit {at} was expected")
            break
        at += layer.bits
    if at != fields.stream_bits or fields.stream_bytes != math.ceil(at / 8):
        problems.append(f"its layers hold {at} bits; it declares {fields.stream_bits} bits in {fields.stream_bytes} bytes")
    at = fields.stream_bytes
    for tensor in fields.tensors:
        if tensor.byte_offset != at or min(tensor.shape, default=1) < 0 or tensor.bytes != 4 * math.prod(tensor.shape):
            problems.append(f"tensor {tensor.name!r} declares {tensor.bytes} bytes at byte {tensor.byte_offset} for "
                            f"shape {tensor.shape}; {4 * max(0, math.prod(tensor.shape))} bytes at byte {at} were expected")
            break
        at += tensor.bytes
    if at != fields.payload_bytes:
        problems.append(f"its streams and tensors end at byte {at}, its payload at {fields.payload_bytes}")
    if problems:
        raise ModelFileError(f"{source}: header does not describe its payload: {problems[0]}")


def _stream(payload: bytes, layer: dict[str, Any], most: int | None = None) -> tuple[bytes, int]:
    """One layer's stream cut out of the packed streams, as ``encoding.decode`` reads it (its first ``most`` bits)."""
    start, count = int(layer["bit_offset"]), int(layer["bits"])
    count = count if most is None else min(count, most)
    first, last = start // 8, math.ceil((start + count) / 8)
    bits = np.unpackbits(np.frombuffer(payload[first:last], dtype=np.uint8))[start - 8 * first:start - 8 * first + count]
    return np.packbits(bits).tobytes(), count


def registered_model(header: dict[str, Any], source: str = "model file") -> nn.Module:
    """The registered architecture a (checked) header names, at its registered number of classes: the reference
    every stored shape is held to before anything is decoded."""
    model = header["model"]
    if not header.get("registered", True):
        raise ModelFileError(f"{source} holds a {model} outside the study's registry, without its architecture: "
                             "build the module as it was saved and pass it: study.load(path, into=module)")
    if model not in models.MODELS:
        raise ModelFileError(f"{source}: model {model!r} is not a registered architecture (valid: {sorted(models.MODELS)})")
    if header["num_classes"] != models.NUM_CLASSES[model]:
        raise ModelFileError(f"{source}: {header['num_classes']} classes; the registered {model} has "
                             f"{models.NUM_CLASSES[model]}")
    return models.build_model(model)


def _check_shape(stored: Sequence[int], registered: Sequence[int], compacted: bool, what: str, model: str,
                 source: str) -> None:
    """Equal to the architecture's, or (compacted) the same rank and no larger in any dimension."""
    fits = (len(stored) == len(registered) and all(s <= r for s, r in zip(stored, registered)) if compacted
            else list(stored) == list(registered))
    if not fits:
        raise ModelFileError(f"{source}: shape mismatch in {what}: stored {tuple(stored)}, {model} has {tuple(registered)}")


def check_shapes(header: dict[str, Any], payload: bytes, reference: nn.Module, source: str = "model file") -> None:
    """Each stream declares its header's shape, and every header shape fits ``reference`` (``_check_shape``)."""
    layers = models.prunable_layers(reference)
    state = reference.state_dict()
    for layer in header["layers"]:
        name = layer["name"]
        try:
            declared = encoding.stream_shape(*_stream(payload, layer, encoding.SHAPE_HEAD_BITS))  # its head alone
        except encoding.EncodingError as error:
            raise ModelFileError(f"{source}: layer {name} does not decode: {error}") from None
        if list(declared) != list(layer["shape"]):
            raise ModelFileError(f"{source}: shape mismatch in layer {name}: the stream holds {tuple(declared)}, "
                                 f"the header says {tuple(layer['shape'])}")
        if name not in layers:
            raise ModelFileError(f"{source}: layer {name} is not a layer of {header['model']} (its layers: {list(layers)})")
        _check_shape(layer["shape"], layers[name].weight.shape, header["compacted"], f"layer {name}", header["model"], source)
    for tensor in header["tensors"]:
        if tensor["name"] not in state:
            raise ModelFileError(f"{source}: tensor {tensor['name']} is not in {header['model']}")
        _check_shape(tensor["shape"], state[tensor["name"]].shape, header["compacted"], tensor["name"], header["model"], source)


def decode_weights(header: dict[str, Any], payload: bytes, reference: nn.Module,
                   source: str = "model file") -> dict[str, torch.Tensor]:
    """Every stored tensor by its state-dict name: layer weights decoded, the rest read as float32; shapes are
    checked (``check_shapes``) before the first is decoded."""
    check_shapes(header, payload, reference, source)
    out: dict[str, torch.Tensor] = {}
    for layer in header["layers"]:
        try:
            weight = encoding.decode(*_stream(payload, layer))
        except ValueError as error:  # EncodingError, and the bit reader's truncation errors
            raise ModelFileError(f"{source}: layer {layer['name']} does not decode: {error}") from None
        out[f"{layer['name']}.weight"] = torch.from_numpy(weight.copy())
    for tensor in header["tensors"]:
        start = int(tensor["byte_offset"])
        values = np.frombuffer(payload[start:start + int(tensor["bytes"])], dtype="<f4")
        out[tensor["name"]] = torch.from_numpy(values.astype(np.float32).reshape(tensor["shape"]))
    return out


def build(header: dict[str, Any], tensors: dict[str, torch.Tensor], reference: nn.Module,
          source: str = "model file") -> nn.Module:
    """``reference`` (the registered architecture, or the caller's module) holding exactly the stored tensors, in
    place: a compacted file's smaller layers and batch norms replace the reference's (``_fit_sizes``)."""
    _fit_sizes(reference, tensors, source)
    try:
        missing = reference.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # a tensor of another size than the architecture's
        raise ModelFileError(f"{source}: shape mismatch with {header['model']}: {error}") from None
    wanted = [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")]
    if wanted or missing.unexpected_keys:
        raise ModelFileError(f"{source}: the file and the {header['model']} differ: the file lacks {wanted[:5]}, "
                             f"the module lacks {missing.unexpected_keys[:5]}")
    if header["compacted"]:  # each smaller layer fits its bounds alone; one input shows they fit each other
        try:
            with torch.no_grad():
                reference.eval()(torch.zeros(1, *header["input_shape"]))
        except RuntimeError as error:
            raise ModelFileError(f"{source}: its compacted layers do not fit together: {str(error).splitlines()[0]}") from None
    return reference.eval()


@torch.no_grad()
def _fit_sizes(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Replace each conv, FC and batch-norm module whose stored tensors are smaller (removed filters and channels)
    by one of the stored size, built like it: what compaction did to the model before it was saved."""
    for name, module in list(net.named_modules()):
        weight = tensors.get(f"{name}.weight")
        if weight is None or not hasattr(module, "weight") or tuple(weight.shape) == tuple(module.weight.shape):
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            try:
                net.set_submodule(name, coupling.dense_layer(module, weight, tensors.get(f"{name}.bias")))
            except ValueError as error:
                raise ModelFileError(f"{source}: layer {name} cannot take its stored size: {error}") from None
        elif isinstance(module, nn.BatchNorm2d):
            net.set_submodule(name, nn.BatchNorm2d(weight.shape[0], eps=module.eps, momentum=module.momentum,
                                                   affine=module.affine, track_running_stats=module.track_running_stats))
        else:
            raise ModelFileError(f"{source}: {name} ({type(module).__name__}) is stored at {tuple(weight.shape)}, "
                                 f"the module has {tuple(module.weight.shape)}")


def load(path: str | Path, into: nn.Module | None = None) -> nn.Module:
    """The torch module stored in a study model file, with exactly its stored weights (see the module's docstring).

    ``into``: a module built as the saved one was (the file of a model outside the study's registry holds no
    architecture): filled in place and returned; one whose layer names or shapes differ from the file's is refused,
    naming the first difference, before anything is decoded."""
    source = str(path)
    header, payload = parse(Path(path).read_bytes(), source)
    if into is not None and _classes(into) != header["num_classes"]:
        raise ModelFileError(f"{source}: the file's {header['model']} has {header['num_classes']} classes (outputs of "
                             f"its last layer), the module given has {_classes(into)}")
    reference = registered_model(header, source) if into is None else into
    return build(header, decode_weights(header, payload, reference, source), reference, source)


def read_header(path: str | Path) -> dict[str, Any]:
    """What a model file says about itself (after the same checks as ``load``), without building the model."""
    return parse(Path(path).read_bytes(), str(path))[0]
