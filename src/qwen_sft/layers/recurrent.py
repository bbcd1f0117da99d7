"""Packed rows kept apart in layers that carry a state along the sequence (Qwen3.5's Gated DeltaNet).

A Gated DeltaNet layer runs a causal depthwise conv1d (a window of the last 3 tokens) and then a recurrent
state over the whole row. In a padding-free row several examples follow each other: without a reset, example 2
starts from example 1's state and conv window, and its loss depends on what happened to be packed before it.
Restarting position_ids keep the attention layers apart, but transformers' linear-attention layer does not read
them.

`keep_rows_apart(model, classes)` replaces the forward of those layers (on the instances, weights untouched). With
`packed_seq_lens` (the example lengths CausalLMLoss passes to every layer of a padding-free forward):
- on CUDA with flash-linear-attention and causal-conv1d installed, the layer's own forward gets the boundaries
  as the kernels take them: `cu_seq_lens_q` (cumulative lengths, for the chunked delta rule) and `seq_idx`
  (each token's example index, for the conv1d), as transformers' Qwen3_5GatedDeltaNet.forward hands them on;
- anywhere else (CPU, or CUDA without those packages, whose torch fallbacks refuse boundaries), the layer runs
  once per example on that example's slice of the row: exactly the computation of the example alone.
Without packed_seq_lens (one example, padded batches, generation) the layer's own forward runs.
"""

from __future__ import annotations

import functools
import logging
import types

import torch

log = logging.getLogger("qwen_sft")


@functools.cache
def kernels_installed() -> bool:
    """flash-linear-attention and causal-conv1d importable (both keep packed sequences apart on CUDA)."""
    try:
        import causal_conv1d  # noqa: F401
        import fla  # noqa: F401
    except Exception:  # an import error, or a broken CUDA build of either
        return False
    return True


def boundaries(lens: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cu_seq_lens [n+1] int64: 0, l1, l1+l2, ... as flash-linear-attention takes them; seq_idx [1, T] int32:
    each token's example index, as causal-conv1d takes it)."""
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.long, device=device)
    seq_idx = torch.repeat_interleave(torch.arange(len(lens), dtype=torch.int32, device=device),
                                      torch.tensor(lens, device=device))[None]
    return cu, seq_idx


def _packed_forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None,
                    packed_seq_lens: list[int] | None = None, **kwargs):
    own = type(self).forward
    if packed_seq_lens is None or len(packed_seq_lens) == 1:
        return own(self, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
    if cache is not None or attention_mask is not None or hidden_states.shape[0] != 1:
        raise ValueError("packed_seq_lens: a padding-free row is one row with no cache and no attention mask")
    if sum(packed_seq_lens) != hidden_states.shape[1]:
        raise ValueError(f"packed_seq_lens add up to {sum(packed_seq_lens)}, but the row has "
                         f"{hidden_states.shape[1]} tokens")
    return _apart(self, own, hidden_states, packed_seq_lens, kwargs)


def _apart(self, own, hidden_states: torch.Tensor, lens: list[int], kwargs: dict) -> torch.Tensor:
    """The layer over a row of examples of these lengths, each from a zero state and an empty conv window."""
    if hidden_states.device.type == "cuda" and kernels_installed():
        cu, seq_idx = boundaries(lens, hidden_states.device)
        return own(self, hidden_states, cu_seq_lens_q=cu, seq_idx=seq_idx, **kwargs)
    # One call per example, on its slice of the row: the computation of the example alone.
    # torch.split: one backward node for the split, not one full-size zero gradient per slice.
    return torch.cat([own(self, part, **kwargs) for part in hidden_states.split(lens, dim=1)], dim=1)


def keep_rows_apart(model: torch.nn.Module, classes: tuple[str, ...]) -> int:
    """Route every module of the named classes through _packed_forward, in place; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in classes:
            module.forward = types.MethodType(_packed_forward, module)
            count += 1
    if count:
        where = "the kernels' sequence boundaries on CUDA" if kernels_installed() else "one call per example"
        log.info("packed rows: state reset at each example start in %d %s layers (%s)", count,
                 "/".join(classes), where)
    return count


def rows_kept_apart(model: torch.nn.Module) -> bool:
    """Whether keep_rows_apart was applied to some layer of the model."""
    return any(getattr(vars(m).get("forward"), "__func__", None) is _packed_forward for m in model.modules())
