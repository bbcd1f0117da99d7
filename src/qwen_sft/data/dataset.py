"""Data files -> encoded rows + report, and the train / validation split."""

from __future__ import annotations

import dataclasses
import random
import sys
from dataclasses import dataclass

from ..errors import DataError, UserError
from .encode import IGNORE_INDEX, EncodeError, EncodeOptions, Encoded, encode
from .formats import load_dataset
from .report import build_report
from .template import resolve_thinking, template_rules


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    report: dict


def encode_all(cfg, tokenizer, dataset=None) -> tuple[list[Encoded], dict]:
    """Read, validate and encode every row of cfg.dataset (or `dataset`), in file order."""
    rules = template_rules(tokenizer, cfg.model_name_or_path)
    thinking = resolve_thinking(cfg.enable_thinking, rules, cfg.model_name_or_path)
    loaded = load_dataset(dataset or cfg.dataset, cfg.data_format, skip_invalid=cfg.skip_invalid)
    opts = EncodeOptions(cutoff_len=cfg.cutoff_len, enable_thinking=thinking, train_on=cfg.train_on)
    kept, dropped, refused = [], [], []
    for conv in loaded.conversations:
        try:
            enc = encode(conv, tokenizer, opts)
        except EncodeError as e:  # a row the template renders in a shape the mask rule cannot serve
            refused.append((conv, str(e)))
            continue
        if enc.num_trained == 0:
            dropped.append(f"{conv.source}: no trained token within cutoff_len={cfg.cutoff_len} (the prompt before the "
                           f"first trained token is {prompt_tokens(conv, tokenizer, opts)} tokens)")
        else:
            kept.append(enc)
    if refused:  # invalid rows, like the reader's: stop, or count them with skip_invalid
        if not cfg.skip_invalid:
            raise DataError([why for _, why in refused])
        gone = {id(c) for c, _ in refused}
        loaded.conversations = [c for c in loaded.conversations if id(c) not in gone]
        loaded.invalid += [why for _, why in refused]
    report = build_report(loaded, kept, dropped, cfg.cutoff_len, thinking)
    report["template_kind"] = rules.kind
    return kept, report


def prompt_tokens(conv, tokenizer, opts: EncodeOptions) -> int:
    """Tokens before the first trained one in the whole, uncut row (what a dropped row's message names)."""
    full = encode(conv, tokenizer, dataclasses.replace(opts, cutoff_len=sys.maxsize))
    return next((i for i, label in enumerate(full.labels) if label != IGNORE_INDEX), len(full.labels))


def split(rows: list[Encoded], val_size: float, seed: int) -> tuple[list[Encoded], list[Encoded]]:
    """A seeded held-out split: val_size < 1 is a share, >= 1 a row count."""
    if val_size <= 0:
        return rows, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(rows) * val_size))
    if n_val >= len(rows):  # clamping would train on one row and call the rest validation: refuse instead
        raise UserError(f"val_size: {val_size:g} holds out {n_val} row(s), but the data has {len(rows)} usable row(s), "
                        "which leaves none to train on; lower val_size (a share like 0.1, or a row count)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def prepare(cfg, tokenizer) -> PreparedData:
    rows, report = encode_all(cfg, tokenizer)
    train, val = split(rows, cfg.val_size, cfg.seed)
    report["train_rows"], report["val_rows"] = len(train), len(val)
    return PreparedData(train, val, report)
