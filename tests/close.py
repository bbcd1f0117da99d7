"""Float comparisons bounded by what float32 can promise at the tensor's scale, not by numbers fitted to one machine.

Two float32 computations of the same value that differ only in operation order (a recomputation under gradient
checkpointing, a chunked reduction, another release's kernel) differ by a few roundings of the largest terms
involved: a small multiple of eps32 (2^-23, 1.2e-7) times the tensor's largest value. A real difference (another
dropout mask, a wrong packed length, a missing term) moves values by a share of their scale, many orders of
magnitude above that. So the bound is `k * eps32 * max|expected|`, elementwise, with k a few dozen roundings.
"""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps
ROUNDINGS = 32  # k: ~4 roundings were seen between transformers 5.23 and 5.25 (#25); a real difference is > 1e4


def close_bound(expected: torch.Tensor, k: float = ROUNDINGS) -> float:
    """The largest difference float32 rounding explains for a tensor of expected's scale."""
    return k * EPS32 * float(expected.detach().abs().max())


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "", k: float = ROUNDINGS) -> None:
    """actual equals expected up to float32 rounding at expected's scale (module doc); the message says by how much."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = float((actual.detach().double() - expected.detach().double()).abs().max()) if actual.numel() else 0.0
    bound = close_bound(expected, k)
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    assert diff <= bound, (f"{what}: largest difference {diff:.3g} is {diff / (EPS32 * scale or 1):.3g} eps32 of the "
                           f"scale {scale:.3g}; float32 rounding explains at most {k:g} ({bound:.3g})")
