"""What the data set says about a run: its rows' lengths (for the worst micro-batch), steps and tokens.

From the rows `train` prepared (in a training process), else from the data cache entry of this config, opened
without encoding anything (`qwen-sft cache build` or a previous train / check made it), else from a data report
of the same files and cutoff (`check`'s or a run's), else nothing: the plan then assumes micro-batches of full
cutoff_len rows and gives no steps or wall time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DataFacts:
    source: str | None  # where the figures come from (None: no data figures)
    lengths: np.ndarray | None = None  # tokens of each train row (cache / prepared rows)
    trained: np.ndarray | None = None  # trained positions (after the shift) of each train row, where known
    train_rows: int | None = None
    train_tokens: int | None = None
    max_len: int | None = None
    trained_share: float | None = None  # of input tokens
    mean_sq_len: float | None = None  # E[len^2] / E[len]: the attention term of the FLOPs
    rows: object = None  # the train rows themselves (data.rowstore.Rows), where at hand

    def to_dict(self) -> dict:
        return {"source": self.source, "train_rows": self.train_rows, "train_tokens": self.train_tokens,
                "max_row_tokens": self.max_len, "trained_share": self.trained_share}


def _from_lengths(source: str, lengths: np.ndarray, trained: np.ndarray | None) -> DataFacts:
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    share = float(trained.sum()) / total if trained is not None and total else None
    return DataFacts(source, lengths, trained, len(lengths), total, int(lengths.max()) if len(lengths) else 0, share,
                     float((lengths.astype(np.float64) ** 2).sum() / max(total, 1)))


def from_rows(source: str, rows, report: dict) -> DataFacts:
    """A Rows selection (the train split), with its data report: lengths from the index, the trained share from
    the report (the worst micro-batch reads its own rows' labels)."""
    facts = _from_lengths(source, rows.lengths, None)
    facts.rows, facts.trained_share = rows, report.get("trained_token_share")
    return facts


def trained_of(facts: DataFacts, indices) -> list[int]:
    """Trained positions (after the shift) of the given train rows: read from the rows where known, else the data's
    share (or every position but the first)."""
    rows = getattr(facts, "rows", None)
    out = []
    for i in indices:
        n = int(facts.lengths[i])
        if rows is not None:
            labels = np.asarray(rows[int(i)].labels[1:])
            out.append(int(np.count_nonzero(labels != -100)))
        else:
            out.append(n - 1 if facts.trained_share is None else min(n - 1, math.ceil(n * facts.trained_share)))
    return out


def from_report(path: Path, report: dict, cfg) -> DataFacts:
    """A data report (check's or a run's): row and token counts, the longest row, the trained share."""
    from ..data.dataset import split_indices

    kept = int(report["rows_kept"])
    try:
        train, _ = split_indices(kept, cfg.val_size, cfg.seed)
        train_rows = len(train)
    except Exception:  # noqa: BLE001 - a val_size that leaves nothing: train will say so
        train_rows = kept
    tokens = int(report["tokens"])
    share = train_rows / kept if kept else 0
    lp = report.get("length_percentiles") or {}
    return DataFacts(f"data report {path}", None, None, train_rows, round(tokens * share), lp.get("max"),
                     report.get("trained_token_share"), None)


def lookup(cfg, log=None) -> DataFacts:
    """The data figures for cfg without encoding anything: its cache entry, else a matching report, else none."""
    found = _cache_entry(cfg, log)
    if found is not None:
        return found
    for path in _report_candidates(cfg):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        files = report.get("files") or []
        if isinstance(report, dict) and report.get("cutoff_len") == cfg.cutoff_len and _same_files(files, cfg):
            return from_report(path, report, cfg)
    return DataFacts(None)


def _cache_entry(cfg, log) -> DataFacts | None:
    """The train split of cfg's data cache entry, when there is one (the key needs the tokenizer and the data
    files' hashes: no encoding)."""
    from ..data import cache
    from ..data.dataset import split_indices
    from ..data.formats import expand_paths
    from ..data.rowstore import Damaged, RowStore
    from ..errors import UserError

    root = cache.cache_root(cfg.data_cache_dir)
    if root is None:
        return None
    try:
        from ..data.tokenizer import named_tokenizer

        paths = expand_paths(cfg.dataset)
        tok = named_tokenizer(cfg.model_name_or_path)
        entry = root / cache.key_of(cache.key_fields(cfg, tok, paths))
        if not entry.is_dir():
            return None  # not encoded yet
        store = RowStore(entry)
        train, _ = split_indices(len(store), cfg.val_size, cfg.seed)
    except (UserError, Damaged, OSError) as e:
        if log:
            log(f"plan: no data figures from the cache ({str(e).splitlines()[0]})")
        return None
    return from_rows(f"data cache entry {entry}", store.rows(train), store.report)


def _report_candidates(cfg) -> list[Path]:
    stems = [Path(d).stem for d in ([cfg.dataset] if isinstance(cfg.dataset, str) else cfg.dataset)][:1]
    return [cfg.run_dir / "data_report.json"] + [Path("sft/outputs/data_reports") / f"{s}.json" for s in stems]


def _same_files(files: list, cfg) -> bool:
    from ..data.formats import expand_paths

    try:
        want = sorted(str(p.resolve()) for p in expand_paths(cfg.dataset))
    except Exception:  # noqa: BLE001 - data not there
        return False
    return sorted(str(Path(f).resolve()) for f in files) == want


# ---------------------------------------------------------------- the worst micro-batch and the steps


@dataclass
class Micro:
    batch: dict  # collated as the trainer collates it
    tokens: int  # input positions (padded: the padded size)
    trained: int
    rows: int
    what: str  # how it was chosen


def worst_micro(cfg, facts: DataFacts) -> Micro:
    """The micro-batch of the most tokens the run can meet: the longest rows (packs, with packing) of the data, or
    rows of cutoff_len when the lengths are unknown."""
    from ..batching import Collator, pack_rows
    from ..data.encode import Encoded

    b = cfg.per_device_train_batch_size
    if facts.lengths is not None and len(facts.lengths):
        lengths = facts.lengths
        if cfg.packing:
            packs = pack_rows(lengths.tolist(), cfg.cutoff_len)
            packs = sorted(packs, key=lambda p: -int(lengths[p].sum()))[:b]
            what = f"the {len(packs)} largest packs of the data"
        else:
            order = np.argsort(-lengths, kind="stable")[:b]
            packs = [[int(i)] for i in order]
            what = f"the {len(packs)} longest rows of the data"
        index = [i for p in packs for i in p]
        trained = dict(zip(index, trained_of(facts, index)))
        rows = {i: _row(int(lengths[i]), trained[i], Encoded) for i in index}
        order = list(rows)
        local = {i: k for k, i in enumerate(order)}
        batch = Collator([rows[i] for i in order], cfg.padding_free, 0,
                         [[local[i] for i in p] for p in packs])(list(range(len(packs))))
    else:
        n = min(cfg.cutoff_len, facts.max_len or cfg.cutoff_len)
        t = n - 1 if facts.trained_share is None else min(n - 1, math.ceil(n * facts.trained_share))
        per = max(1, cfg.cutoff_len // n) if cfg.packing else 1
        units = [[_row(n, t, Encoded) for _ in range(per)] for _ in range(b)]
        flat = [r for u in units for r in u]
        packs = [list(range(k * per, (k + 1) * per)) for k in range(b)]
        batch = Collator(flat, cfg.padding_free, 0, packs)(list(range(b)))
        what = (f"{b} x {per} rows of {n} tokens" if cfg.packing else f"{b} rows of {n} tokens") + (
            " (the data's longest row)" if facts.max_len else " (cutoff_len: no data figures)")
    tokens = int(batch["input_ids"].numel())
    trained = int((batch["targets"] != -100).sum())
    return Micro(batch, tokens, trained, int(len(batch["row_ids"])), what)


def _row(n: int, trained: int, encoded):
    """A row of n tokens whose last `trained` targets are trained (ids are 0: the values do not matter)."""
    untrained = n - trained  # labels[0] is never a target; labels[1:] hold the trained targets at the end
    return encoded([0] * n, [-100] * untrained + [0] * trained, source="plan")


def steps_and_tokens(cfg, facts: DataFacts, world: int) -> dict:
    """Optimizer steps, input tokens over the run, and the tokens of a step, as train's StepPlan counts them."""
    from ..batching import StepPlan, pack_rows

    if facts.lengths is not None:
        lengths = facts.lengths
        if cfg.packing:  # rank 0's units, as train.plan_steps splits them (every world-th of the first used)
            packs = pack_rows(lengths.tolist(), cfg.cutoff_len)
            units = np.array([int(lengths[p].sum()) for p in packs], dtype=np.int64)
        else:
            units = lengths
        used = len(units) // world * world
        unit_len, epoch_tokens = units[0:used:world], int(units[:used].sum())
        plan = StepPlan(unit_len, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.seed,
                        cfg.group_by_length, cfg.num_train_epochs, cfg.max_steps)
        steps, per_epoch = plan.total_steps, plan.steps_per_epoch
    elif facts.train_rows:
        units = math.ceil(facts.train_tokens / cfg.cutoff_len) if cfg.packing else facts.train_rows
        per_rank = units // world
        per_epoch = math.ceil(math.ceil(per_rank / cfg.per_device_train_batch_size) / cfg.gradient_accumulation_steps)
        steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.num_train_epochs * per_epoch))
        epoch_tokens = facts.train_tokens * (per_rank * world) / max(units, 1)
    else:
        return {"steps": cfg.max_steps if cfg.max_steps > 0 else None, "tokens": None, "steps_per_epoch": None}
    tokens = epoch_tokens * steps / max(per_epoch, 1)
    return {"steps": steps, "tokens": int(tokens), "steps_per_epoch": per_epoch}
