"""Channels that structured pruning must remove together, found by tracing the model with torch.fx.

A layer's output channel flows unchanged through batch norm, activations and pooling; a residual sum joins
the channels of its summands (channel c of the sum is channel c of both). So the output channels of every
layer whose result reaches one sum form one *channel space*: channel c can leave the network only if every
producer's filter c, every batch norm's entry c and every consumer's input c go together. A plain chain
(LeNet-5, VGG) has one space per layer; ResNet-18 has 12 prunable ones.

Written here rather than taken from a pruning library (Torch-Pruning's DepGraph does this too) because the
study needs the groups as plain index sets: ADMM projects onto them, storage and energy count them, and
compaction must give exactly the masked model's outputs, which the tests check.
Operations the tracer does not know freeze the channels they touch (never pruned): conservative, not wrong.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from study.core.models import prunable_layers

PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
RELU_FUNCTIONS = (torch.relu, torch.nn.functional.relu)


@dataclass
class ChannelSpace:
    """One set of channels that stand or fall together."""

    channels: int
    producers: list[str] = field(default_factory=list)  # conv/FC layers whose output rows are these channels
    norms: list[str] = field(default_factory=list)  # batch norms acting on them
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer, inputs per channel: H*W after a flatten)
    prunable: bool = True  # False where the channels are the input, the output, or pass an unknown operation


class _Spaces:
    """Union-find over channel spaces while the graph is walked."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.info: list[ChannelSpace] = []

    def new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.info.append(ChannelSpace(channels))
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            if self.info[a].channels != self.info[b].channels:
                raise ValueError(f"a sum joins {self.info[a].channels} and {self.info[b].channels} channels")
            self.parent[b] = a
            merged, other = self.info[a], self.info[b]
            merged.producers += other.producers
            merged.norms += other.norms
            merged.consumers += other.consumers
            merged.prunable &= other.prunable
        return a

    def freeze(self, space: int | None) -> None:
        if space is not None:
            self.info[self.find(space)].prunable = False


def channel_spaces(model: nn.Module, input_shape: tuple[int, ...]) -> list[ChannelSpace]:
    """Every channel space of ``model`` (prunable or not) that some conv/FC layer produces, in graph order."""
    graph_module = torch.fx.symbolic_trace(model)
    ShapeProp(graph_module).propagate(torch.zeros(1, *input_shape))
    modules = dict(graph_module.named_modules())
    spaces = _Spaces()
    channel: dict[torch.fx.Node, int] = {}  # node -> space of its [N, C, ...] output
    flat: dict[torch.fx.Node, tuple[int, int]] = {}  # node -> (space, inputs per channel) of a flattened output

    def shape(node: torch.fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def freeze_inputs(node: torch.fx.Node) -> None:
        for arg in node.all_input_nodes:
            spaces.freeze(channel.get(arg, flat.get(arg, (None,))[0]))

    def consume(layer: str, arg: torch.fx.Node) -> None:
        if arg in channel:
            spaces.info[spaces.find(channel[arg])].consumers.append((layer, 1))
        elif arg in flat:
            space, per_channel = flat[arg]
            spaces.info[spaces.find(space)].consumers.append((layer, per_channel))

    def flatten(node: torch.fx.Node, arg: torch.fx.Node) -> None:  # [N, C, H, W] -> [N, C*H*W], channel-major
        flat[node] = (channel[arg], math.prod(shape(arg)[2:]))

    def pass_through(node: torch.fx.Node, arg: torch.fx.Node) -> None:
        if arg in channel:
            channel[node] = channel[arg]
        elif arg in flat:
            flat[node] = flat[arg]

    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            channel[node] = spaces.new(shape(node)[1])
            spaces.freeze(channel[node])  # the image channels
        elif node.op == "call_module":
            module, arg = modules[node.target], node.args[0]
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    freeze_inputs(node)
                consume(node.target, arg)
                channel[node] = spaces.new(shape(node)[1])
                spaces.info[channel[node]].producers.append(node.target)
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    spaces.freeze(channel[node])
            elif isinstance(module, nn.BatchNorm2d) and arg in channel:
                channel[node] = channel[arg]
                spaces.info[spaces.find(channel[arg])].norms.append(node.target)
            elif isinstance(module, PASS_THROUGH):
                pass_through(node, arg)
            elif isinstance(module, nn.Flatten) and arg in channel and module.start_dim == 1:
                flatten(node, arg)
            else:
                freeze_inputs(node)
        elif node.op == "call_function" and node.target in ADD_FUNCTIONS and _both_spaces(node, channel):
            channel[node] = spaces.union(channel[node.args[0]], channel[node.args[1]])
        elif node.op == "call_function" and node.target in RELU_FUNCTIONS:
            pass_through(node, node.args[0])
        elif node.op == "call_function" and node.target is torch.flatten and node.args[0] in channel and _start_dim(node) == 1:
            flatten(node, node.args[0])
        elif node.op in ("call_function", "call_method", "output"):
            freeze_inputs(node)  # the network's outputs (class scores), and anything not understood
    order = {node.target: i for i, node in enumerate(graph_module.graph.nodes) if node.op == "call_module"}
    roots = sorted({spaces.find(i) for i in range(len(spaces.parent))})
    result = []
    for space in (spaces.info[r] for r in roots if spaces.info[r].producers):
        space.producers.sort(key=order.__getitem__)  # graph order: a space's first member is the one it starts at
        space.norms.sort(key=order.__getitem__)
        space.consumers.sort(key=lambda consumer: order[consumer[0]])
        result.append(space)
    return sorted(result, key=lambda space: order[space.producers[0]])


def _both_spaces(node: torch.fx.Node, channel: dict) -> bool:
    return len(node.args) == 2 and all(isinstance(a, torch.fx.Node) and a in channel for a in node.args)


def _start_dim(node: torch.fx.Node) -> int:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)


def prunable_spaces(model: nn.Module, input_shape: tuple[int, ...]) -> list[ChannelSpace]:
    return [s for s in channel_spaces(model, input_shape) if s.prunable]


def is_plain_chain(model: nn.Module) -> bool:
    """An ``nn.Sequential`` without batch norm (LeNet-5, VGG-6): every channel belongs to one layer, and the
    per-layer projections and chain compaction (with bias folding) apply as they are."""
    return isinstance(model, nn.Sequential) and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def uses_spaces(model: nn.Module, scheme: str) -> bool:
    """Whether ``scheme`` must prune this model's channels space by space (filter and channel pruning of a
    network with residual sums or batch norm); irregular and column pruning never remove a channel."""
    return scheme in ("filter", "channel") and not is_plain_chain(model)


# ---------------------------------------------------------------------------------------------
# Projection and masking
# ---------------------------------------------------------------------------------------------


def project_space(model: nn.Module, space: ChannelSpace, keep: int) -> torch.Tensor:
    """The channels :func:`space_projection` keeps of the producers' filters as the model has them (0/1 per
    channel); the weights are not changed (see :func:`apply_channel_mask`)."""
    layers = dict(model.named_modules())
    projected = space_projection(space, "filter", keep)({n: layers[n].weight.detach() for n in space.producers})
    return kept_channels(projected[space.producers[0]][1])


def kept_channels(filter_mask: torch.Tensor) -> torch.Tensor:
    """Which output channels (rows) a producer's 0/1 filter mask keeps."""
    return filter_mask.reshape(filter_mask.shape[0], -1).ne(0).any(dim=1)


@torch.no_grad()
def apply_channel_mask(model: nn.Module, space: ChannelSpace, mask: torch.Tensor) -> None:
    """Zero the removed channels everywhere they are made: producers' filters and biases, batch norms' scale
    and shift. A removed channel is then exactly 0 wherever it flows (through sums, ReLU, pooling, padding)."""
    layers = dict(model.named_modules())
    drop = ~mask.bool()
    for name in space.producers:
        layer = layers[name]
        layer.weight[drop.to(layer.weight.device)] = 0
        if layer.bias is not None:
            layer.bias[drop.to(layer.bias.device)] = 0
    for name in space.norms:
        norm = layers[name]
        norm.weight[drop.to(norm.weight.device)] = 0
        norm.bias[drop.to(norm.bias.device)] = 0


def _input_blocks(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A consumer's weights as [out, channel, rest]: everything that reads each channel of the space
    (a conv's kernel taps of that input, or an FC layer's block of inputs after a flatten). A view."""
    return weight.reshape(weight.shape[0], channels, -1)


def removed_channels(model: nn.Module, space: ChannelSpace) -> torch.Tensor:
    """Channels that can leave the network: zero at every producer and batch norm (they carry nothing), or
    read by no consumer (what they carry is never used)."""
    layers = dict(model.named_modules())
    dead = torch.ones(space.channels, dtype=torch.bool)
    for name in space.producers:
        layer = layers[name]
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1).ne(0).any(dim=1).cpu()
        if layer.bias is not None:
            rows |= layer.bias.detach().ne(0).cpu()
        dead &= ~rows
    for name in space.norms:
        norm = layers[name]
        dead &= norm.weight.detach().eq(0).cpu() & norm.bias.detach().eq(0).cpu()
    unread = torch.ones(space.channels, dtype=torch.bool)
    for name, _ in space.consumers:
        unread &= ~_input_blocks(layers[name].weight.detach(), space.channels).ne(0).any(dim=2).any(dim=0).cpu()
    return dead | (unread if space.consumers else torch.zeros_like(unread))


# ---------------------------------------------------------------------------------------------
# Joint projections for ADMM
# ---------------------------------------------------------------------------------------------

JointProjection = Callable[[Mapping[str, torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor]]]


def members(space: ChannelSpace, scheme: str) -> list[str]:
    """The layers whose weights a scheme's constraint on this space involves: producers' filters (filter
    pruning) or consumers' inputs (channel pruning)."""
    if scheme == "filter":
        return list(space.producers)
    if scheme == "channel":
        return [name for name, _ in space.consumers]
    raise ValueError(f"scheme={scheme!r}: only filter and channel pruning act on whole channels")


def _channel_view(weight: torch.Tensor, channels: int, scheme: str) -> torch.Tensor:
    """[channel, rest]-shaped squared magnitudes of what each channel means to this weight."""
    if scheme == "filter":
        return weight.reshape(weight.shape[0], -1)
    return _input_blocks(weight, channels).transpose(0, 1).reshape(channels, -1)


def channel_scores(weights: Mapping[str, torch.Tensor], space: ChannelSpace, scheme: str) -> torch.Tensor:
    """Per channel, the squared norm of all its members' weights that touch it: what removing it costs."""
    total = torch.zeros(space.channels, dtype=torch.float64)
    for name in members(space, scheme):
        total += _channel_view(weights[name].detach(), space.channels, scheme).double().pow(2).sum(dim=1).cpu()
    return total


def space_projection(space: ChannelSpace, scheme: str, keep: int) -> JointProjection:
    """The exact Euclidean projection onto "at most ``keep`` channels of the space non-zero" for all its
    member weights at once: keep the channels of largest summed squared norm over the members, zero the
    rest everywhere. Returns, per member, the projected weight and its 0/1 mask."""
    if not 0 <= keep <= space.channels:
        raise ValueError(f"keep={keep} outside 0..{space.channels}")
    names = members(space, scheme)

    def project(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        alive = torch.zeros(space.channels, dtype=torch.bool)
        alive[torch.topk(channel_scores(weights, space, scheme), keep, sorted=False).indices] = True
        result = {}
        for name in names:
            weight = weights[name]
            if scheme == "filter":
                mask = alive.to(weight.device).reshape((-1,) + (1,) * (weight.dim() - 1)).expand_as(weight)
            else:
                mask = alive.to(weight.device)[None, :, None].expand(weight.shape[0], space.channels,
                                                                     weight[0].numel() // space.channels).reshape(weight.shape)
            mask = mask.to(weight.dtype)
            result[name] = (weight * mask, mask)
        return result

    return project


# ---------------------------------------------------------------------------------------------
# Compaction
# ---------------------------------------------------------------------------------------------


def compact(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[nn.Module, dict[str, dict[str, int]]]:
    """A smaller dense copy without the channels :func:`removed_channels` finds, and per-layer (in, out) sizes
    before/after: each space's removable channels leave its producers (rows), norms and consumers (inputs)
    at once. The copy computes exactly what the masked model computes (up to float summation order)."""
    kept_out: dict[str, torch.Tensor] = {}
    kept_in: dict[str, tuple[torch.Tensor, int]] = {}
    for space in prunable_spaces(model, input_shape):
        alive = ~removed_channels(model, space)
        if bool(alive.all()):
            continue
        index = torch.nonzero(alive).flatten()
        for name in [*space.producers, *space.norms]:
            kept_out[name] = index
        for name, per_channel in space.consumers:
            kept_in[name] = (index, per_channel)
    smaller = copy.deepcopy(model)
    layers = dict(smaller.named_modules())
    for name in sorted(set(kept_out) | set(kept_in)):
        _replace(smaller, name, _shrunk(layers[name], kept_out.get(name), kept_in.get(name)))
    before, after = prunable_layers(model), prunable_layers(smaller)
    sizes = {name: {"in_before": before[name].weight.shape[1], "out_before": before[name].weight.shape[0],
                    "in_after": after[name].weight.shape[1], "out_after": after[name].weight.shape[0]} for name in before}
    return smaller, sizes


def _columns(index: torch.Tensor, per_channel: int) -> torch.Tensor:
    """Input columns of channels ``index`` when each channel spans ``per_channel`` consecutive inputs."""
    return (index[:, None] * per_channel + torch.arange(per_channel)).flatten()


@torch.no_grad()
def _shrunk(layer: nn.Module, rows: torch.Tensor | None, inputs: tuple[torch.Tensor, int] | None) -> nn.Module:
    if isinstance(layer, nn.BatchNorm2d):
        new = nn.BatchNorm2d(len(rows), eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                             track_running_stats=layer.track_running_stats)
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, key).copy_(getattr(layer, key)[rows])
        new.num_batches_tracked.copy_(layer.num_batches_tracked)
        return new.train(layer.training)
    weight = layer.weight
    if rows is not None:
        weight = weight[rows]
    if inputs is not None:
        index, per_channel = inputs
        weight = weight[:, _columns(index, per_channel)] if isinstance(layer, nn.Linear) else weight[:, index]
    bias = None if layer.bias is None else (layer.bias if rows is None else layer.bias[rows])
    return dense_layer(layer, weight, bias).to(layer.weight.device).train(layer.training)


def dense_layer(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A conv or FC layer like ``layer`` (kernel, stride, padding...) holding ``weight`` and ``bias``, whatever
    their sizes: what both compactions build."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError("grouped convolutions are not supported by compaction")
        new = nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, bias=bias is not None, padding_mode=layer.padding_mode)
    else:
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, new)
