"""Activation memory of one training step: estimated from the model's config (the dry run prints it per GPU
beside weights, gradients and optimizer states), and measured (`measure_peak`, for the tests and
`bench/bench_memory.py`).

The estimate counts, tensor by tensor, what autograd keeps for the backward pass, the way Korthikanti et
al. count it for GPT ("Reducing Activation Recomputation in Large Transformer Models", MLSys 2023,
arXiv:2205.05198, section 4.1: a layer keeps s*b*h*(34 + 5*a*s/h) bytes in 16-bit precision), adapted to a
Llama-style decoder layer as transformers runs it: RMSNorm (its input upcast to float32), SDPA attention
(flash / memory-efficient kernels keep the log-sum-exp, not the a*s*s probabilities: the 5as/h term is
gone; the padding mask, b*s*s per layer, stays; their output, laid out as o_proj reads it, is o_proj's
input), grouped-query keys and values repeated to every head, a SwiGLU MLP, and no dropout. Per token and
layer, in bytes, with e bytes per element (2 in bf16, 4 in float32), hidden size h, q = heads x head_dim,
intermediate size i, a heads, s the padded length:

    2 RMSNorms    2 x (4h + 2eh + 4)   float32 input, normalized and output, 1/rms
    attention     4eq + 4a             q, k, v (repeated), output (o_proj's input); log-sum-exp (float32)
    SwiGLU MLP    4ei                  gate, SiLU(gate), up, their product (down_proj's input)
    padding mask  e*s

(SmolLM2-135M in float32: 46.5 KB per token and layer, plus the mask; Llama-3.1-8B in bf16: 208 KB, 52h
against GPT's 34h, its MLP being 3.5h wide.) Once per pass: the rotary tables, the final norm, the token ids.
Gradient checkpointing (transformers checkpoints each decoder layer) keeps only each layer's input, e*h per
token, and holds one layer's activations again while it is recomputed. The logits are computed at the
response positions only (`harness.training.loss`): the loss keeps their float32 log-softmax, 4*V bytes per
position, and its backward holds three such tensors at once. A pass without autograd (CC-Tuning's English
pass under `detach_english`) keeps nothing but what it hands on; its peak is one layer's widest
intermediates. The peak of the step is the largest of: the end of each pass's forward; in the backward
pass (last pass first), the loss's gradient, one layer's backward (its widest gradients, and with
checkpointing the layer recomputed) with everything still kept, and the embedding's gradient. Gradients a
weight receives from several uses wait for the last one: the tied output layer's for the embedding's, and,
when an earlier pass has gradients too (CC-Tuning's English pass), every weight's first gradient, unsharded,
until the earlier pass's backward reaches it.
Accuracy against the measured peak: tests/training/test_memory_estimate.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
GPU_BYTES = 80 * GIB  # an 80 GB GPU (A100 / H100 80GB: 81,920 MiB)
# Kept free on the GPU for what this estimate leaves out: the CUDA context and kernels (~1 GiB), NCCL
# buffers, allocator fragmentation, DeepSpeed / FSDP communication buckets.
GPU_RESERVE = 8 * GIB


@dataclass(frozen=True)
class Shape:
    """What the activations of a decoder-only transformer depend on, from its config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def of(cls, config) -> Shape:
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        heads = int(text.num_attention_heads)
        hidden = int(text.hidden_size)
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        return cls(
            layers=int(text.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            vocab=int(text.vocab_size),
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer's parameters (projections and the two norms)."""
        kv = self.kv_heads * self.head_dim
        return self.hidden * (2 * self.q + 2 * kv) + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden


@dataclass(frozen=True)
class Pass:
    """One forward pass of a training step on one device's micro-batch."""

    batch: int
    seq: int  # padded length
    grad: bool  # autograd keeps its activations for the backward pass
    logits: int = 0  # positions whose logits (and loss) are computed: the response tokens
    keeps: int = 0  # bytes it hands on to the later passes (CC-Tuning's a: batch x L x h)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


@dataclass
class Estimate:
    """Activation memory of one step: the peak, what the passes keep for the backward pass, and where the
    peak comes from (`parts`, bytes by name, for the plan's line)."""

    peak: float
    kept: float
    parts: dict[str, float] = field(default_factory=dict)


def layer_bytes(shape: Shape, tokens: int, seq: int, e: int) -> float:
    """What autograd keeps of one decoder layer for `tokens` tokens in sequences of length `seq`."""
    h, i = shape.hidden, shape.intermediate
    norms = 2 * (4 * h + 2 * e * h + 4)
    attention = 4 * e * shape.q + 4 * shape.heads
    mlp = 4 * e * i
    return tokens * (norms + attention + mlp + e * seq)


def layer_transient(shape: Shape, tokens: int, seq: int, e: int) -> float:
    """The largest intermediates of one layer alive at once, forward without autograd or backward (the
    MLP's: three of width i and two of width h per token), and the padding mask."""
    return tokens * e * (3 * shape.intermediate + 2 * shape.hidden + seq)


def logits_kept(shape: Shape, positions: int, e: int) -> float:
    """The output layer's input and the float32 log-softmax the loss keeps, for `positions` positions."""
    return positions * (e * shape.hidden + 4 * shape.vocab)


def estimate(shape: Shape, passes: list[Pass], *, checkpointing: bool, e: int) -> Estimate:
    """The activation memory of a step made of `passes` (run in order; one backward pass after the last,
    through the passes in reverse order), with or without gradient checkpointing of the decoder layers, at
    `e` bytes per element. `parts`: the candidate peaks, by moment."""
    h, v, n_layers = shape.hidden, shape.vocab, shape.layers
    embedding = shape.embedding_params * e
    kept = 0.0
    before: list[float] = []  # what the earlier passes keep, at the start of each pass
    moments: dict[str, float] = {}
    for k, p in enumerate(passes):
        before.append(kept)
        transient = layer_transient(shape, p.tokens, p.seq, e)
        if not p.grad:
            moments[f"pass {k + 1} (no autograd)"] = kept + transient
            kept += p.keeps
            continue
        # each layer's input (checkpointing) or all it keeps; the rotary tables (cos, sin: seq x head_dim); the
        # final norm (float32 input, normalized, 1/rms) and token ids; the logits' input and log-softmax
        layers = n_layers * (p.tokens * e * h if checkpointing else layer_bytes(shape, p.tokens, p.seq, e))
        once = 2 * e * p.seq * shape.head_dim + p.tokens * (4 * h + e * h + 4 + 8)
        saved = layers + once + logits_kept(shape, p.logits, e)
        logits_forward = p.logits * v * (e + (4 if e != 4 else 0))  # the logits, their float32 copy
        moments[f"pass {k + 1} forward"] = kept + saved + max(logits_forward, transient)
        kept += saved + p.keeps
    total = kept
    # Backward, last pass first. A weight used by several passes gets its gradient from each, and autograd
    # holds the first ones until the last arrives: the output layer's (tied to the embedding) until the
    # embedding's; and, when an earlier pass has gradients too (CC-Tuning's English pass), every weight's.
    held = embedding if shape.tied else 0.0
    grad_passes = [k for k, p in enumerate(passes) if p.grad]
    for k in reversed(grad_passes):
        p = passes[k]
        name = f"pass {k + 1} backward"
        if p.logits:
            moments[f"{name}, loss"] = total + max(8 * p.logits * v, embedding)  # log-softmax's gradients
        layer = transient + (layer_bytes(shape, p.tokens, p.seq, e) if checkpointing else 0)
        if k != grad_passes[-1]:  # gradients of what it handed on, one (batch, seq, h) per layer
            layer += n_layers * p.tokens * e * h
        moments[f"{name}, layers"] = total + held + layer + shape.hidden * shape.intermediate * e
        moments[f"{name}, embedding"] = before[k] + held + embedding * (2 if held else 1)
        total = before[k]
        held = (n_layers * shape.layer_params) * e + embedding  # this pass's gradients, for the earlier ones
    return Estimate(peak=max(moments.values()), kept=kept, parts=moments)


def single_pass(shape: Shape, batch: int, seq: int, response: int, *, checkpointing: bool, e: int) -> Estimate:
    """One forward with autograd over prompt + response, logits at `response` positions (vanilla SFT and the
    data-level methods)."""
    return estimate(shape, [Pass(batch, seq, True, logits=response)], checkpointing=checkpointing, e=e)


@dataclass(frozen=True)
class Budget:
    """One GPU's memory for a method: the sharded model states plus activations, and whether it fits."""

    states: float
    activations: float
    working: float = 0.0  # parameters gathered for compute (ZeRO-3 / FSDP), on top of the shards

    @property
    def total(self) -> float:
        return self.states + self.activations + self.working

    @property
    def fits(self) -> bool:
        return self.total + GPU_RESERVE <= GPU_BYTES

    def verdict(self) -> str:
        size, reserve = f"{GPU_BYTES / GIB:.0f} GiB", f"{GPU_RESERVE / GIB:.0f}"
        if self.fits:
            spare = (GPU_BYTES - self.total) / GIB
            return f"fits an {size} GPU ({spare:.0f} GiB to spare, {reserve} of them kept for CUDA, NCCL and fragmentation)"
        over = (self.total + GPU_RESERVE - GPU_BYTES) / GIB
        return f"does NOT fit an {size} GPU (over by {over:.0f} GiB with {reserve} GiB kept for CUDA, NCCL and fragmentation)"


def gathered_bytes(shape: Shape, e: int = 2) -> float:
    """ZeRO-3 / FSDP full shard: the parameters of the unit in use and of the one prefetched, gathered whole
    in 16 bits, and their gradients before the reduce-scatter: 4 x the largest unit (a decoder layer, or
    the embedding / output layer)."""
    return 4 * max(shape.layer_params, shape.embedding_params) * e


class ActivationNote(str):
    """A line of a method's dry-run notes (`Method.plan_notes`) that also carries the method's activation
    estimate per GPU, in bytes: the dry run adds it to the model states for the method's fit verdict (a
    method without one is counted as one pass, `single_pass`)."""

    activations: float

    def __new__(cls, text: str, activations: float) -> ActivationNote:
        note = super().__new__(cls, text)
        note.activations = activations
        return note


def host_memory_line(loading: str, world: int, params: int, stored_bytes: int) -> str:
    """The dry run's line on host memory per process while the model loads (`harness.data.models.load_model`:
    float32 weights in every process, unless a sharded launch loads them once: `sharded_loading`)."""
    full = fmt(params * 4)
    if loading == "zero3":
        return (f"host memory per process while loading: rank 0 reads the checkpoint ({fmt(params * stored_bytes)}, "
                f"memory-mapped) and partitions it as it loads, the other {world - 1} read nothing "
                "(DeepSpeed zero3_init_flag)")  # fmt: skip
    if loading == "fsdp":
        return (f"host memory per process while loading: rank 0 {full} (float32), the other {world - 1} none (built "
                "on the meta device, their shards broadcast from rank 0; FSDP cpu_ram_efficient_loading)")  # fmt: skip
    every = "the process" if world == 1 else f"each of the {world} processes"
    return f"host memory per process while loading: {full} in {every} (the whole model in float32)"


def fmt(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def _walk(nodes) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


@dataclass
class Measured:
    """What `measure` saw: the step's result, the peak of the bytes torch allocated on the CPU while it ran
    above what was allocated before it, and the bytes it left allocated (its result and what that holds)."""

    result: Any
    peak: int
    retained: int


def measure(step: Callable[[], Any]) -> Measured:
    """Run `step()` under the profiler and read the running total of its allocation events. Weights, existing
    gradients and optimizer states are not counted, only what `step` allocates. (On a GPU,
    `torch.cuda.max_memory_allocated` measures the same peak.)"""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = step()
    events = sorted(
        (node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.total_allocated)
        for node in _walk(prof.profiler.kineto_results.experimental_event_tree())
        if node.tag == _EventType.Allocation
    )
    if not events:
        return Measured(result, 0, 0)
    # the running total is the allocator's since its first profiled allocation, not this session's
    _, size, total = events[0]
    start = total - size
    return Measured(result, max(total for _, _, total in events) - start, events[-1][2] - start)


def measure_peak(step: Callable[[], Any]) -> int:
    """The peak of `measure`: what a training step (forward + backward) allocates at most, its activations."""
    return measure(step).peak


def saved_for_backward(forward: Callable[[], Any], parameters: Iterable[Any]) -> tuple[Any, int]:
    """Run `forward` and count the bytes autograd saves for the backward pass: every saved tensor once per
    storage, the `parameters` left out (what gradient checkpointing trades for recomputation). Returns the
    forward's result and the bytes."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in parameters}
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = forward()
    return result, sum(saved.values())
