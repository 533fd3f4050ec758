"""Model-agnostic access to a decoder-only transformer for CC-Tuning: find its decoder layers and their
feed-forward blocks, record the feed-forward outputs at the Response Start Token (RST), and add a vector
to the residual stream after one layer at the RST. Works through PyTorch hooks, so no modeling file is
copied: any `transformers` causal LM whose decoder layers form an `nn.ModuleList` qualifies (Llama,
Qwen2, Mistral, Gemma 1-3, Phi, GPT-2, ...).

Positions. `rst` is given per forward call, either as a tensor of column indices, one per row (batch,),
or as an int applied to every row (-1: the last column). Right padding keeps each row's RST at its
prompt length - 1; left padding puts every row's RST in the last column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.plumbing.errors import HarnessError

# Names of the feed-forward block inside a decoder layer, most specific first. A layer with a
# `post_feedforward_layernorm` (Gemma 2/3, OLMo 2) adds that norm's output to the residual stream, so
# that is "the feed-forward output before it is added to the residual stream".
FFN_NAMES: tuple[str, ...] = (
    "post_feedforward_layernorm",
    "mlp",
    "feed_forward",
    "ffn",
    "block_sparse_moe",
    "moe",
)

Positions = torch.Tensor | int


def _first(output):
    """The hidden states of a module output (a tensor, or a tuple whose first item is one)."""
    return output[0] if isinstance(output, tuple) else output


def _at(hidden: torch.Tensor, rst: Positions) -> torch.Tensor:
    """hidden (batch, seq, d) at each row's RST -> (batch, d).

    The index tensors the backward pass needs are saved as they are, not through the saved-tensor hooks of
    a surrounding checkpoint: in a decoder layer checkpointed without re-entrance, a saved index would be a
    placeholder whose unpacking recomputes the layer as soon as the gradient of the captured activation
    arrives, long before the rest of the layer's gradient, so that with gradient through the English pass
    every English layer would be recomputed early and held at once."""
    with torch.autograd.graph.saved_tensors_hooks(_same, _same):
        if isinstance(rst, int):
            return hidden[:, rst]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), rst.to(hidden.device)]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def feed_forward(layer: nn.Module) -> nn.Module:
    """The module whose output is the feed-forward contribution to the residual stream of `layer`."""
    for name in FFN_NAMES:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    children = ", ".join(name for name, _ in layer.named_children())
    raise HarnessError(
        f"cannot find the feed-forward block of {type(layer).__name__} (children: {children}); "
        f"CC-Tuning looks for one of: {', '.join(FFN_NAMES)}"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM: the first `nn.ModuleList` with `num_hidden_layers` entries that
    each hold a feed-forward block (works through PEFT wrappers and multimodal text towers)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model, "config") else None
    n_layers = getattr(config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if n_layers is not None and len(module) != n_layers:
            continue
        if all(any(isinstance(getattr(layer, n, None), nn.Module) for n in FFN_NAMES) for layer in module):
            return module
    raise HarnessError(
        f"cannot find the decoder layers of {type(model).__name__} (looked for an nn.ModuleList of "
        f"{n_layers} layers with a feed-forward block); CC-Tuning needs a decoder-only transformer"
    )


@dataclass
class RSTCapture:
    """What one forward pass recorded at the RST: feed-forward outputs per layer, and the hidden state
    entering layer 0 (the input embedding e)."""

    ffn_by_layer: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (batch, d)
    embedding: torch.Tensor | None = None  # (batch, d)

    @property
    def ffn(self) -> torch.Tensor:
        """a: (batch, L, d)."""
        return torch.stack([self.ffn_by_layer[i] for i in sorted(self.ffn_by_layer)], dim=1)


@dataclass(eq=False)
class _Hook:
    """A forward hook ("forward") or forward pre-hook with kwargs ("pre") on a module, not yet registered."""

    module: nn.Module
    kind: str
    fn: Callable

    def register(self):
        if self.kind == "pre":
            return self.module.register_forward_pre_hook(self.fn, with_kwargs=True)
        return self.module.register_forward_hook(self.fn)

    def copy(self) -> _Hook:
        return _Hook(self.module, self.kind, self.fn)


@dataclass
class _FusionState:
    make_vector: Callable[[torch.Tensor], torch.Tensor]
    once: bool
    active: bool = True
    embedding: torch.Tensor | None = None  # (batch, d)


class CCHooks:
    """The decoder layers and feed-forward blocks of one model, with capture and injection hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = decoder_layers(model)
        self.ffns = [feed_forward(layer) for layer in self.layers]
        self._active: list[_Hook] = []  # the hooks registered by the open `capture` / `fuse` blocks

    def _register(self, hooks: list[_Hook]) -> Callable[[], None]:
        """Register hooks (and track them for `checkpoint_function`); returns their remover."""
        handles = [hook.register() for hook in hooks]
        self._active.extend(hooks)

        def remove() -> None:
            for handle in handles:
                handle.remove()
            for hook in hooks:
                self._active.remove(hook)

        return remove

    def checkpoint_function(self, checkpoint: Callable) -> Callable:
        """Wrap a layer's gradient-checkpointing function (`checkpoint(function, *args)`, as transformers
        calls it) so that, when the backward pass recomputes the layer, the capture and fusion hooks that
        were registered during its forward are registered again for the recomputation.

        Without this a recomputed layer would run without them: `torch.utils.checkpoint` (non-re-entrant)
        finds fewer saved tensors than in the forward and fails, and a fusion inside the checkpointed
        region would be silently missing from the recomputed graph. The Gumbel noise of a replayed
        Decision Maker is the forward's: checkpointing restores the RNG state for the recomputation."""

        def checkpointed(function: Callable, *args, **kwargs):
            hooks = list(self._active)
            calls = 0

            def run(*a, **k):
                nonlocal calls
                calls += 1
                if calls == 1 or not hooks:  # the forward: the hooks are registered already
                    return function(*a, **k)
                remove = self._register([hook.copy() for hook in hooks])
                try:
                    return function(*a, **k)
                finally:
                    remove()

            return checkpoint(run, *args, **kwargs)

        return checkpointed

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @staticmethod
    def _layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    @contextmanager
    def capture(self, rst: Positions) -> Iterator[RSTCapture]:
        """Record, during the forward passes inside the block, every layer's feed-forward output and the
        input of layer 0 at `rst`. Gradients flow through the recorded tensors unless the forward runs
        under `torch.no_grad()`."""
        record = RSTCapture()

        def save_ffn(index: int):
            def hook(module, args, output):
                record.ffn_by_layer[index] = _at(_first(output), rst)

            return hook

        def save_embedding(module, args, kwargs):
            record.embedding = _at(self._layer_input(args, kwargs), rst)

        remove = self._register(
            [_Hook(ffn, "forward", save_ffn(i)) for i, ffn in enumerate(self.ffns)]
            + [_Hook(self.layers[0], "pre", save_embedding)]
        )
        try:
            yield record
        finally:
            remove()

    @contextmanager
    def fuse(
        self,
        after_layer: int,
        rst: Positions,
        make_vector: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
        once: bool = False,
    ) -> Iterator[None]:
        """Add a vector to the residual stream leaving layer `after_layer`, at `rst` only.

        `make_vector` is the vector (batch, d), or a function of the hidden state entering layer 0 at the
        RST, e (batch, d), called inside the forward pass (CC-Tuning's Decision Maker needs e of the very
        pass it fuses into). `once=True` fuses into the first forward call only (generation: the RST is
        the last column of the first call, later calls are new tokens).
        """
        if not 0 <= after_layer < self.num_layers:
            raise HarnessError(
                f"fuse_after_layer={after_layer} is out of range; the model has layers 0..{self.num_layers - 1}"
            )
        if isinstance(make_vector, torch.Tensor):
            vector = make_vector
            make_vector = lambda e: vector  # noqa: E731
        state = _FusionState(make_vector=make_vector, once=once)

        def save_embedding(module, args, kwargs):
            if state.active:
                state.embedding = _at(self._layer_input(args, kwargs), rst)

        def add_vector(module, args, output):
            if not state.active:
                return output
            hidden = _first(output)  # (batch, seq, d)
            vector = state.make_vector(state.embedding).to(hidden.dtype)  # (batch, d)
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            cols = (
                torch.full_like(rows, rst % hidden.shape[1])
                if isinstance(rst, int)
                else rst.to(hidden.device)
            )
            if state.once:
                state.active = False
            # hidden + the vector at each row's RST, out of place: one new (batch, seq, d) tensor, nothing saved
            # for the backward pass but the indices
            fused = hidden.index_put((rows, cols), vector, accumulate=True)
            return (fused, *output[1:]) if isinstance(output, tuple) else fused

        remove = self._register(
            [_Hook(self.layers[0], "pre", save_embedding), _Hook(self.layers[after_layer], "forward", add_vector)]
        )
        try:
            yield
        finally:
            remove()
