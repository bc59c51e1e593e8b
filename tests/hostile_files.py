"""Crafted model files: valid checksums, streams that declare more than their bytes hold (tests and benchmarks)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from study.costs import encoding, model_file
from study.costs.bitstream import BitWriter


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Header and payload of a model file's bytes, unchecked."""
    _, _, length, _ = model_file.PREFIX.unpack_from(data)
    return json.loads(data[model_file.PREFIX.size:model_file.PREFIX.size + length]), data[model_file.PREFIX.size + length:]


def join(header: dict[str, Any], payload: bytes) -> bytes:
    """A model file of ``header`` and ``payload`` whose checksum is right: only what was edited is wrong."""
    head = json.dumps(header, sort_keys=True).encode()
    return model_file.PREFIX.pack(model_file.MAGIC, model_file.VERSION, len(head), hashlib.sha256(head + payload).digest()) + head + payload


def rewritten(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The file with its header edited in place and its checksum made right again."""
    header, payload = split(data)
    edit(header)
    return join(header, payload)


def stream(fmt: str, shape: tuple[int, ...], *, weight_field: int = 32, index_bits: int = 0, aux: int = 0,
           pointer_bits: int = 0, body: tuple[tuple[np.ndarray, int], ...] = ()) -> tuple[bytes, int]:
    """A layer stream written field by field, as ``encoding.decode`` reads it: header, then ``body`` (values, width)."""
    writer = BitWriter()
    writer.write("header", [encoding.FORMATS.index(fmt), len(shape)], 8)
    writer.write("header", list(shape), 32)
    writer.write("header", [weight_field, index_bits, aux, pointer_bits], 8)
    for values, width in body:
        writer.write("body", values, width)
    return writer.getvalue(), writer.n_bits


def with_stream(data: bytes, layer: int, new: tuple[bytes, int], header_shape: list[int] | None = None) -> bytes:
    """The file with layer ``layer``'s stream replaced by ``new`` (offsets, lengths and checksum made right) and,
    when given, its header shape set to ``header_shape``."""
    header, payload = split(data)
    stream_bytes = header["stream_bytes"]
    bits = np.unpackbits(np.frombuffer(payload[:stream_bytes], dtype=np.uint8))[:header["stream_bits"]]
    streams = []
    for entry in header["layers"]:
        start = entry["bit_offset"]
        streams.append(bits[start:start + entry["bits"]])
    streams[layer] = np.unpackbits(np.frombuffer(new[0], dtype=np.uint8))[:new[1]]
    at = 0
    for entry, part in zip(header["layers"], streams):
        entry["bit_offset"], entry["bits"] = at, int(part.size)
        at += part.size
    header["layers"][layer]["shape"] = header_shape or header["layers"][layer]["shape"]
    packed = np.packbits(np.concatenate(streams)).tobytes()
    header["stream_bits"], header["stream_bytes"] = at, len(packed)
    tensors = payload[stream_bytes:]
    for tensor in header["tensors"]:
        tensor["byte_offset"] += len(packed) - stream_bytes
    header["payload_bytes"] = len(packed) + len(tensors)
    return join(header, packed + tensors)


CRAFTED = tuple(f"{case}{agrees}" for case in ("csr 2^24 rows, 0-bit pointers", "csr 2^31 rows, 0-bit pointers",
                                              "structured 65536 x 65536") for agrees in ("", ", header agrees"))


def crafted(data: bytes) -> dict[str, bytes]:
    """The crafted files a reader must refuse cheaply, made from a real file ``data``: its first layer replaced by
    2^24 or 2^31 rows in CSR with 0-bit pointers, or by an empty structured 65536 x 65536 layer; each once with the
    JSON header left as written and once with the header claiming the stream's shape."""
    out = {}
    for power in (24, 31):
        rows = stream("csr", (2 ** power, 1))
        out[f"csr 2^{power} rows, 0-bit pointers"] = with_stream(data, 0, rows)
        out[f"csr 2^{power} rows, 0-bit pointers, header agrees"] = with_stream(data, 0, rows, [2 ** power, 1])
    empty = stream("structured", (65536, 65536), body=((np.zeros(65536, dtype=np.uint64), 1),))
    out["structured 65536 x 65536"] = with_stream(data, 0, empty)
    out["structured 65536 x 65536, header agrees"] = with_stream(data, 0, empty, [65536, 65536])
    return out
