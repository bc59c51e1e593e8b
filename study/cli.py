"""``python -m study price|compress|save MODEL ...``: the public verbs on model files, for people and scripts.

MODEL is a study model file (``.stm``), a ``.safetensors`` file, or a state dict saved by ``torch.save`` (read with
``weights_only=True``: nothing in the file is executed). A state dict holds no architecture, so it needs ``--arch
module:function`` (e.g. ``torchvision.models:resnet18 --arch-arg num_classes=10``) to build the module it fills; so
does a ``.stm`` file of a model outside the study's registry. Tables print as text, or ``--csv`` / ``--json``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")  # where training scripts commonly nest the weights


class CommandError(Exception):
    """Bad input on the command line or in a file: the message names it and says what to pass instead."""


def build_architecture(spec: str | None, arch_args: list[str], source: str) -> Any:
    """The module ``module:function`` builds with ``key=value`` arguments (values read as Python literals)."""
    if spec is None:
        raise CommandError(f"{source} holds weights without their architecture: pass --arch module:function "
                           "(e.g. --arch torchvision.models:resnet18 --arch-arg num_classes=10)")
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise CommandError(f"--arch {spec!r}: write it as module:function, e.g. torchvision.models:resnet18")
    kwargs = {}
    for item in arch_args:
        key, equals, value = item.partition("=")
        if not equals:
            raise CommandError(f"--arch-arg {item!r}: write it as key=value, e.g. num_classes=10")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    try:
        build: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise CommandError(f"--arch {spec!r}: {error}") from None
    return build(**kwargs)


def _state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a damaged file
            raise CommandError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error, a zip error, or a file of something else
        raise CommandError(f"{path}: not a state dict torch.load can read with weights_only=True ({error})") from None
    for key in STATE_DICT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CommandError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors (nor under "
                           f"{list(STATE_DICT_KEYS)})")
    return state


def open_model(path: Path, arch: str | None, arch_args: list[str]) -> Any:
    """The module a model file holds (see the module's docstring)."""
    import study
    from study.costs.model_file import SUFFIX, ModelFileError

    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    if path.suffix == SUFFIX:
        into = build_architecture(arch, arch_args, str(path)) if arch else None
        try:
            return study.load(path, into=into)
        except ModelFileError as error:
            raise CommandError(str(error)) from None
    net = build_architecture(arch, arch_args, str(path))
    try:
        missing = net.load_state_dict(_state_dict(path), strict=False)
    except RuntimeError as error:  # torch lists every size mismatch; the first one says enough
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise CommandError(f"{path} does not fit --arch {arch}: {first}") from None
    if missing.missing_keys or missing.unexpected_keys:
        raise CommandError(f"{path} does not fit --arch {arch}: the file lacks {missing.missing_keys[:5]}, the module "
                           f"lacks {missing.unexpected_keys[:5]}")
    return net.eval()


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write one input's shape as integers, e.g. 3,32,32") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be at least 1, e.g. 3,32,32")
    return shape


def _stored_header(path: Path) -> dict[str, Any] | None:
    """A study model file's header (what ``--bits``, ``--input-shape`` and ``save`` default to), else None."""
    from study.costs.model_file import SUFFIX, read_header

    return read_header(path) if path.suffix == SUFFIX else None


def _defaults(path: Path, header: dict[str, Any] | None, bits: int | None,
              input_shape: tuple[int, ...] | None) -> tuple[int, tuple[int, ...]]:
    """``--bits`` and ``--input-shape``, a model file's own where they were not given (a .stm header holds both)."""
    if bits is None or input_shape is None:
        if header is None:
            missing = " and ".join(n for n, v in (("--bits", bits), ("--input-shape", input_shape)) if v is None)
            raise CommandError(f"{path} does not say how it is stored: pass {missing} (e.g. --bits 8 --input-shape 3,32,32)")
        bits = header["weight_bits"] if bits is None else bits
        input_shape = tuple(header["input_shape"]) if input_shape is None else input_shape
    return bits, input_shape


def _print_table(table: Any, form: str) -> None:
    if form == "csv":
        print(table.to_csv(index=False), end="")
    elif form == "json":
        print(json.dumps({**table.attrs, "layers": table.to_dict(orient="records")}, default=str, indent=1))
    else:
        print(f"scheme {table.attrs['scheme']}, {table.attrs['weight_bits']}-bit weights, input {table.attrs['input_shape']}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
        for module in table.attrs["not_priced"]:
            print(f"not priced: {module['module']} ({module['type']}, {module['parameters']:,} parameters): "
                  "only Conv2d and Linear weights are")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, helptext in (("price", "what the model weighs stored, and one inference's energy, per layer"),
                           ("compress", "one-shot pruning and quantization, then the price; --out writes a .stm"),
                           ("save", "the model as a .stm file whose streams are its priced bits")):
        sub = verbs.add_parser(verb, help=helptext)
        sub.add_argument("model", type=Path, help="a .stm, .safetensors or torch state dict file")
        sub.add_argument("--bits", type=int, help="bits per stored weight: 1-8 (1: binary) or 32 (float32); "
                                                   "default for a .stm file: its own")
        sub.add_argument("--input-shape", type=_shape, help="one input, e.g. 3,32,32; default for a .stm file: its own")
        sub.add_argument("--arch", help="module:function that builds the model (needed for a state dict)")
        sub.add_argument("--arch-arg", action="append", default=[], help="key=value passed to --arch (repeatable)")
        sub.add_argument("--scheme", help="irregular, filter, channel, column, an N:M pattern such as 2:4 (compress), nm "
                                          "(price, save), dense (price, save); price and save read it from the zeros "
                                          "when not given")
        if verb == "compress":
            sub.add_argument("--rate", type=float, required=True, help="pruning rate: all weights / kept weights")
        if verb in ("compress", "save"):
            sub.add_argument("--out", type=Path, required=verb == "save", help="the .stm file to write")
        sub.add_argument("--index-bits", type=int, help="run-length width of relative-index formats (default: best)")
        form = sub.add_mutually_exclusive_group()
        form.add_argument("--csv", dest="form", action="store_const", const="csv", help="the table as CSV")
        form.add_argument("--json", dest="form", action="store_const", const="json", help="the table as JSON")
    args = parser.parse_args(argv)
    import study
    from study.contract import NM_SCHEME, is_nm
    from study.costs.model_file import ModelFileError

    try:
        net = open_model(args.model, args.arch, args.arch_arg)
        header = _stored_header(args.model)
        args.bits, args.input_shape = _defaults(args.model, header, args.bits, args.input_shape)
        if args.verb == "compress":
            if args.scheme is None:
                raise CommandError("compress needs --scheme: irregular, filter, channel, column or an N:M pattern (2:4)")
            net = study.compress(net, scheme=args.scheme, rate=args.rate, weight_bits=args.bits, input_shape=args.input_shape)
        # a model compressed to an N:M pattern is priced and saved as an N:M model (each layer's own pattern)
        scheme = NM_SCHEME if args.scheme is not None and is_nm(args.scheme) else args.scheme
        options = {"weight_bits": args.bits, "input_shape": args.input_shape, "scheme": scheme,
                   "index_bits": args.index_bits}
        if args.verb in ("compress", "save") and args.out is not None:
            # a study model stays one: saved under its registry name it loads without --arch
            registered = header is not None and header.get("registered", True)
            written = study.save(net, args.out, **options, name=header["model"] if registered else args.model.stem,
                                 dataset=header["dataset"] if header else "")
            print(f"wrote {args.out}: {args.out.stat().st_size:,} bytes, {written['stream_bytes']:,} of them the layers' "
                  f"streams ({written['stream_bits']:,} bits)", file=sys.stderr)
        if args.verb != "save":
            _print_table(study.price(net, **options), args.form or "text")
    except (CommandError, ModelFileError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
