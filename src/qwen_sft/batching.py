"""Micro-batch order (seeded per epoch, optionally length-grouped) and collation.

The order is a pure function of (seed, epoch): optimizer step s always sees the same micro-batches,
which is what makes resume exact without saving a sampler state.

Targets are shifted here, per example: targets[t] is the label of token t+1 of the same example, or
-100 at an example's last token. The model then never learns to predict across an example boundary,
and the loss needs no shifting of its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.encode import IGNORE_INDEX

MEGABATCH_FACTOR = 50  # length grouping sorts within windows of 50 micro-batches, as HF does


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """Micro-batches (lists of row indices) for one epoch."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        # Sort inside shuffled windows, then shuffle the micro-batches: similar lengths share a
        # micro-batch, yet the order still changes every epoch.
        window = batch_size * MEGABATCH_FACTOR
        order = [
            i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: -lengths[i])
        ]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def pack_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Group rows into packs of at most `budget` tokens: first-fit by decreasing length.

    Deterministic and done once, so the number of packs (and so the step plan) is the same every
    epoch; the packs themselves are shuffled per epoch like rows.
    """
    # First fit = the lowest-numbered pack with room. A max-tree over the packs' free room finds it in
    # O(log n) instead of scanning every pack (100k rows: seconds, not minutes).
    size = 1
    while size < max(len(lengths), 1):
        size *= 2
    room = [-1] * (2 * size)  # room[size + k]: free tokens of pack k (-1: not opened); inner nodes: max
    packs: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        need = lengths[i]
        if room[1] >= need:
            node = 1
            while node < size:  # descend to the leftmost leaf with enough room
                node = 2 * node if room[2 * node] >= need else 2 * node + 1
            packs[node - size].append(i)
            room[node] -= need
        else:
            node = size + len(packs)
            packs.append([i])
            room[node] = budget - need
        node //= 2
        while node:
            room[node] = max(room[2 * node], room[2 * node + 1])
            node //= 2
    return packs


@dataclass
class StepPlan:
    """Maps a global optimizer step to its micro-batches."""

    lengths: list[int]
    batch_size: int
    accumulation: int
    seed: int
    group_by_length: bool
    num_epochs: float
    max_steps: int = -1
    _cached_epoch: int = field(default=-1, repr=False)
    _cached: list = field(default_factory=list, repr=False)

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_per_epoch / self.accumulation)

    @property
    def total_steps(self) -> int:
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.num_epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def step_batches(self, step: int) -> list[list[int]]:
        return self.steps_batches(step, step + 1)[0]

    def steps_batches(self, first: int, last: int) -> tuple[list[list[int]], list[int]]:
        """The micro-batches of steps first..last-1 (all in one epoch) back to back, and how many each step has:
        one slice of the epoch's list (1M rows: 500k steps, one call instead of 500k)."""
        epoch, k = divmod(first, self.steps_per_epoch)
        assert self.epoch_of(last - 1) == epoch, "steps of one epoch"
        if self._cached_epoch != epoch:
            self._cached = epoch_batches(self.lengths, self.batch_size, self.seed, epoch, self.group_by_length)
            self._cached_epoch = epoch
        n = len(self._cached)
        k_last = k + last - first
        sizes = [min(self.accumulation, n - j * self.accumulation) for j in range(k, k_last)]
        return self._cached[k * self.accumulation:k_last * self.accumulation], sizes


def shifted_targets(row) -> np.ndarray:
    """row: an Encoded (lists) or a cached Row (arrays); int64, like every tensor built here."""
    labels = np.asarray(row.labels, dtype=np.int64)
    return np.append(labels[1:], IGNORE_INDEX)


def num_targets(row) -> int:
    """Trained positions of a row after shifting (the first label is never a target)."""
    return int(np.count_nonzero(np.asarray(row.labels[1:]) != IGNORE_INDEX))


def collate_padding_free(rows: list) -> dict:
    """One row of concatenated examples; position_ids restart at 0 for each example."""
    ids = np.concatenate([np.asarray(r.input_ids, dtype=np.int64) for r in rows])
    pos = np.concatenate([np.arange(len(r.input_ids), dtype=np.int64) for r in rows])
    tgt = np.concatenate([shifted_targets(r) for r in rows])
    return {
        "input_ids": torch.from_numpy(ids)[None],
        "position_ids": torch.from_numpy(pos)[None],
        "targets": torch.from_numpy(tgt)[None],
    }


def collate_padded(rows: list, pad_id: int) -> dict:
    """The classic layout: right padding plus an attention mask."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    tgt = torch.full((len(rows), width), IGNORE_INDEX)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.from_numpy(np.asarray(r.input_ids, dtype=np.int64))
        tgt[i, :n] = torch.from_numpy(shifted_targets(r))
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "targets": tgt}


class Collator:
    """Picklable collate function for DataLoader workers. With packs, indices name packs of rows.

    rows: anything with len() and rows[i] -> an object with input_ids, labels and source: the cached rows
    (data.rowstore.Rows, read from the mapped files as each batch is built), or a list of Encoded.
    packs: lists of row indices, or an [n, 1] array (one row per unit)."""

    def __init__(self, rows, padding_free: bool, pad_id: int, packs=None):
        self.rows, self.padding_free, self.pad_id, self.packs = rows, padding_free, pad_id, packs

    def __call__(self, indices: list[int]) -> dict:
        if self.packs is not None:
            indices = [i for p in indices for i in self.packs[p]]
        rows = [self.rows[i] for i in indices]
        batch = collate_padding_free(rows) if self.padding_free else collate_padded(rows, self.pad_id)
        batch["row_ids"] = [r.source for r in rows]
        return batch
