"""GPUs by name: memory and dense bf16 peak, as their makers publish them (no torch import here).

Memory is the card's size as sold, read as GiB (a "24 GB" card holds 24,564 MiB; H200: 143,771 MiB as torch reports
it, docs/benchmarks.md). bf16 TFLOP/s: the published dense figure (no 2:4 sparsity); GeForce cards: with FP32
accumulate, the rate PyTorch's bf16 matmuls get (half their FP16-accumulate figure). Sources: NVIDIA's datasheets
(H100, H200, A100, L40S, L4, A10, A40, RTX A6000, RTX 6000 Ada), its Ampere / Ada / Blackwell GeForce architecture
whitepapers (RTX 3090, 4090, 5090), AMD's MI300X datasheet. A10G is an AWS part without an NVIDIA datasheet: its
figure is the commonly quoted one (approximate). Turing and Volta cards (T4, V100) have no bf16 tensor cores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError

# CUDA context, cuBLAS handles and what else a process holds on the card outside the allocator: the card's memory
# minus this is what a run can allocate (typical figure; torch.cuda.mem_get_info on the machine tells exactly).
CONTEXT_GIB = 0.5


@dataclass(frozen=True)
class Card:
    key: str
    name: str
    memory_gib: float
    bf16_tflops: float | None  # published dense bf16 peak; None: no bf16 tensor cores
    note: str = ""
    free_gib: float | None = None  # a card in this machine: its free memory now (torch.cuda.mem_get_info)

    @property
    def usable_gib(self) -> float:
        return self.free_gib if self.free_gib is not None else self.memory_gib - CONTEXT_GIB

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "memory_gib": self.memory_gib, "usable_gib": self.usable_gib,
                "bf16_tflops": self.bf16_tflops, "note": self.note,
                "source": {"memory": "--memory", "local": "this machine (torch.cuda)"}.get(
                    self.key, "published figures (qwen_sft/plan/cards.py)")}


CARDS = [
    Card("h100", "NVIDIA H100 80GB (SXM)", 80, 989.4),
    Card("h100-pcie", "NVIDIA H100 80GB PCIe", 80, 756.5),
    Card("h100-nvl", "NVIDIA H100 NVL 94GB", 94, 835.5),
    Card("h200", "NVIDIA H200 141GB", 140.4, 989.4, "memory as torch reports it on the H200 measured here"),
    Card("b200", "NVIDIA B200 180GB", 180, 2250),
    Card("a100-40", "NVIDIA A100 40GB", 40, 312),
    Card("a100-80", "NVIDIA A100 80GB", 80, 312),
    Card("l40s", "NVIDIA L40S 48GB", 48, 362.1),
    Card("l40", "NVIDIA L40 48GB", 48, 181),
    Card("l4", "NVIDIA L4 24GB", 24, 121),
    Card("a10", "NVIDIA A10 24GB", 24, 125),
    Card("a10g", "NVIDIA A10G 24GB (AWS)", 24, 70, "approximate bf16 figure (no NVIDIA datasheet)"),
    Card("a40", "NVIDIA A40 48GB", 48, 149.7),
    Card("a6000", "NVIDIA RTX A6000 48GB", 48, 154.8),
    Card("rtx6000-ada", "NVIDIA RTX 6000 Ada 48GB", 48, 364.2),
    Card("rtx3090", "NVIDIA GeForce RTX 3090 24GB", 24, 71),
    Card("rtx4090", "NVIDIA GeForce RTX 4090 24GB", 24, 165.2),
    Card("rtx5090", "NVIDIA GeForce RTX 5090 32GB", 32, 209.5),
    Card("t4", "NVIDIA T4 16GB", 16, None, "no bf16 tensor cores (Turing): bf16 runs emulated, no time estimate"),
    Card("v100", "NVIDIA V100 32GB", 32, None, "no bf16 tensor cores (Volta): bf16 runs emulated, no time estimate"),
    Card("mi300x", "AMD Instinct MI300X 192GB", 192, 1307.4, "ROCm: the plan's kernels are CUDA's"),
]
BY_KEY = {c.key: c for c in CARDS}
ALIASES = {"h100-80": "h100", "h100-sxm": "h100", "h200-141": "h200", "a100": "a100-80", "a100-80gb": "a100-80",
           "a100-40gb": "a100-40", "3090": "rtx3090", "4090": "rtx4090", "5090": "rtx5090", "rtx-a6000": "a6000",
           "rtxa6000": "a6000", "6000-ada": "rtx6000-ada", "l40s-48": "l40s"}


def normalize(name: str) -> str:
    """'RTX 4090', 'rtx_4090', 'GeForce RTX 4090 24GB' -> 'rtx4090'; 'A100 40GB' -> 'a100-40'."""
    t = name.strip().lower().replace("_", " ")
    t = re.sub(r"\b(nvidia|geforce|amd|instinct)\b", " ", t)
    t = re.sub(r"(\d+)\s*gb\b", r"-\1", t)
    t = re.sub(r"\brtx\s+(\d{4})", r"rtx\1", t)
    t = re.sub(r"[\s-]+", "-", t).strip("-")
    return t.replace("-ada-generation", "-ada")


def find(name: str) -> Card:
    """The card `name` names; UserError listing the known ones (and --memory) otherwise."""
    key = normalize(name)
    for candidate in (key, ALIASES.get(key), key.split("-")[0] if key.split("-")[0] in BY_KEY else None):
        if candidate in BY_KEY:
            card = BY_KEY[candidate]
            size = re.search(r"-(\d+)$", key)
            if size and candidate == key.split("-")[0] and float(size.group(1)) != card.memory_gib:
                continue  # 'h100-40' is no H100 we know
            return card
    known = ", ".join(c.key for c in CARDS)
    raise UserError(f"--gpu {name}: not a card plan knows ({known}); give its memory instead: --memory GiB")


def custom(memory_gib: float) -> Card:
    return Card("memory", f"a card with {memory_gib:g} GiB", float(memory_gib), None, "memory given by --memory")
