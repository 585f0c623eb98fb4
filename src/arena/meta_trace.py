"""A model's forward and backward traced on the meta device (shapes only: no memory, no compute): the bytes of the
tensors its ops create while they are alive (activations, attention scores, gradients, transients) and its FLOPs,
exactly as the model's code allocates them. The planner's measuring instrument."""

from __future__ import annotations

import weakref

import torch


def _is_padding_check(func, args) -> bool:
    """Meta tensors have no values. The model reads values only in its padding checks ("is every token real?"), and
    the plan's rows are full: every such check is true."""
    return func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta and args[0].dtype == torch.bool


class FullRows(torch.utils._python_dispatch.TorchDispatchMode):
    """Answers the model's padding checks on meta tensors (true: the plan's rows are full); every other op runs."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return True if _is_padding_check(func, args) else func(*args, **(kwargs or {}))


class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of the storages that ops create, while they are alive, and their peak. Storages that exist before
    (parameters, buffers, inputs) are not counted; a view shares its base's storage and is counted once."""

    def __init__(self, existing: set[int]):
        super().__init__()
        self.existing = existing
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten

        if _is_padding_check(func, args):
            return True
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.live or key in self.existing:
                    continue
                self.live[key] = storage.nbytes()
                self.current += storage.nbytes()
                weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)
        return out


def _storages(model) -> set[int]:
    return {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}


def _inputs(rows: int, length: int, num_features: int, device) -> dict:
    batch = {"input_ids": torch.zeros((rows, length), dtype=torch.long, device=device),
             "attention_mask": torch.ones((rows, length), dtype=torch.long, device=device)}
    if num_features:
        batch["features"] = torch.zeros((rows, num_features), device=device)
    return batch


def training_activation_peak(model, rows: int, length: int, num_features: int) -> int:
    """Peak bytes created by one forward and backward of `rows` sequences of `length` tokens (gradients
    included), counted on whatever device the model is on (meta: no memory, no compute)."""
    device = next(model.parameters()).device
    batch = _inputs(rows, length, num_features, device)
    model.train()
    tracker = LiveBytes(_storages(model))
    with tracker:
        model(**batch).float().logsumexp(-1).sum().backward()
    model.zero_grad(set_to_none=True)
    return tracker.peak


def inference_activation_peak(model, rows: int, length: int, num_features: int) -> int:
    device = next(model.parameters()).device
    batch = _inputs(rows, length, num_features, device)
    model.eval()
    tracker = LiveBytes(_storages(model))
    with torch.no_grad(), tracker:
        model(**batch)
    return tracker.peak


def training_flops(model, rows: int, length: int, num_features: int) -> int:
    """FLOPs of one forward and backward (with checkpointing's recompute) of `rows` x `length` tokens, counted by
    torch's FlopCounterMode on whatever device the model is on (meta: shapes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    batch = _inputs(rows, length, num_features, device)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter, FullRows():
        model(**batch).float().logsumexp(-1).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()
