"""Data files -> encoded rows + report, and the train / validation split.

The rows are encoded on every core and kept in the data cache (data/cache.py); what the rest of the package
gets is a Rows view of the cache: rows read from memory-mapped files, one at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .cache import log_stderr, open_or_build
from .rowstore import Rows


@dataclass
class PreparedData:
    train: Rows
    val: Rows
    report: dict

    @property
    def dataset_hash(self) -> str:
        """checkpoint.file_hash of the data files, as the cache key took it (the run record's dataset_hash)."""
        return self.train.store.meta["key_fields"]["data_sha256"]


def encode_all(cfg, tokenizer, dataset=None, log=log_stderr, stop=None) -> tuple[Rows, dict]:
    """Read, validate and encode every row of cfg.dataset (or `dataset`), in file order; from the data cache
    when it holds them. log: the cache's lines (None: quiet unless it encodes)."""
    store = open_or_build(cfg, tokenizer, dataset, log=log, stop=stop)
    return store.rows(), store.report


def split_indices(n: int, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded held-out split of n rows, each side in file order: val_size < 1 is a share, >= 1 a row count."""
    if val_size <= 0:
        return np.arange(n), np.arange(0)
    n_val = int(val_size) if val_size >= 1 else max(1, round(n * val_size))
    if n_val >= n:  # clamping would train on one row and call the rest validation: refuse instead
        raise UserError(f"val_size: {val_size:g} holds out {n_val} row(s), but the data has {n} usable row(s), "
                        "which leaves none to train on; lower val_size (a share like 0.1, or a row count)")
    order = list(range(n))
    random.Random(seed).shuffle(order)  # the held-out rows of every earlier version of qwen-sft: keep it
    held = np.zeros(n, dtype=bool)
    held[order[:n_val]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def row_of_sequence(store) -> np.ndarray:
    """The data row of each encoded sequence (a row trains one sequence, or more: encode.py), from 0."""
    flags = store.flag_values
    more = np.asarray(flags[:, store.flags.index("continues_row")], dtype=bool) if len(flags) else np.zeros(0, bool)
    return np.cumsum(~more) - 1


def encode_and_split(cfg, tokenizer, log=log_stderr, stop=None) -> PreparedData:
    """Every row of cfg.dataset encoded (encode_all), then split into training and held-out sequences (val_size)."""
    rows, report = encode_all(cfg, tokenizer, log=log, stop=stop)
    # Held out by data row, so that no row has sequences on both sides; a row of one sequence (nearly every
    # row) gets the split it always had.
    row = row_of_sequence(rows.store)
    train_rows, val_rows = split_indices(int(row[-1]) + 1 if len(row) else 0, cfg.val_size, cfg.seed)
    held = np.isin(row, val_rows)
    train, val = np.flatnonzero(~held), np.flatnonzero(held)
    report["train_rows"], report["val_rows"] = len(train), len(val)
    return PreparedData(rows.store.rows(train), rows.store.rows(val), report)
