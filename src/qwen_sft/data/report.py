"""The data report: what the training run will actually see, and thresholds that fail the run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import write_text
from .encode import Encoded
from .formats import Conversation, LoadResult


def _percentiles(values) -> dict:
    if not len(values):
        return {}
    s = np.sort(np.asarray(values, dtype=np.int64))
    pick = lambda q: int(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))])  # noqa: E731 nearest rank
    return {"min": int(s[0]), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": int(s[-1]),
            "mean": round(int(s.sum()) / len(s), 1)}


def conversation_digest(conv: Conversation) -> bytes:
    """sha256 of the row as read (messages and tools): equal for exact duplicates, whatever file or format."""
    return hashlib.sha256(json.dumps(conv.to_json(), sort_keys=True, ensure_ascii=False).encode()).digest()


def encoded_flags() -> list[str]:
    """The bool fields of Encoded (truncated, reply_cut, thinking, ...): counted in the report, kept per row by the
    data cache. Read from the dataclass, so that a flag added to Encoded flows through both unchanged."""
    return [f.name for f in dataclasses.fields(Encoded) if f.type in (bool, "bool")]


class ReportBuilder:
    """The data report, accumulated in file order a chunk of rows at a time: the rows themselves are not kept.

    read(): the valid conversations and invalid rows of a chunk; kept() / dropped(): what encoding made of them."""

    DIGEST_BYTES = 16  # of each row's sha256, to count duplicates (1M rows: 16 MB)

    def __init__(self, files: list[str], cutoff_len: int, thinking: bool = False, template_kind: str | None = None):
        """thinking: the mode the rows are encoded in; template_kind: data/template.py's kind of the template."""
        self.files, self.cutoff_len, self.thinking, self.template_kind = (
            list(files),
            cutoff_len,
            thinking,
            template_kind,
        )
        self.invalid: list[str] = []
        self.dropped_rows: list[str] = []
        self.rows_per_format: Counter = Counter()
        self.trained = 0
        self.flags: Counter = Counter()  # kept rows with each flag of encoded_flags() set
        self.rows_kept = self.extra_sequences = self.extra_sequence_tokens = 0
        self._digests: list[bytes] = []
        self._lengths: list[np.ndarray] = []

    def read(self, invalid: list[str], formats: list[str], digests: bytes) -> None:
        """invalid: 'source: problem' per invalid row; formats and digests: per valid conversation, in order."""
        self.invalid += invalid
        self.rows_per_format.update(formats)
        self._digests.append(digests)

    def kept(self, lengths: np.ndarray, trained: int, flags: np.ndarray) -> None:
        """lengths, flags: per kept sequence (bool [sequences, len(encoded_flags())]); a row's flag is set when
        it is set on any of its sequences (continues_row marks a row's further sequences)."""
        lengths, flags = np.asarray(lengths, dtype=np.int64), np.asarray(flags, dtype=bool)
        self._lengths.append(lengths)
        self.trained += int(trained)
        more = flags[:, encoded_flags().index("continues_row")]
        row = np.cumsum(~more) - 1  # each sequence's row, counted from 0 in this chunk
        rows = int(row[-1]) + 1 if len(row) else 0
        for k, name in enumerate(encoded_flags()):
            if name != "continues_row":
                self.flags[name] += int(np.count_nonzero(np.bincount(row, flags[:, k], minlength=rows)))
        self.rows_kept += rows
        self.extra_sequences += int(more.sum())
        self.extra_sequence_tokens += int(lengths[more].sum())

    def dropped(self, reasons: list[str]) -> None:
        self.dropped_rows += reasons

    @property
    def valid_rows(self) -> int:
        return sum(len(d) for d in self._digests) // self.DIGEST_BYTES

    def report(self) -> dict:
        digests = np.frombuffer(b"".join(self._digests), dtype=f"V{self.DIGEST_BYTES}")
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        kept, tokens, trained, flags = self.rows_kept, int(lengths.sum()), self.trained, self.flags
        return {
            "files": self.files,
            "rows_read": len(digests) + len(self.invalid),
            "rows_per_format": dict(self.rows_per_format),
            "rows_kept": kept,
            "invalid_rows": len(self.invalid),
            "invalid_examples": self.invalid[:20],
            "dropped_no_trained_tokens": len(self.dropped_rows),
            "dropped_examples": self.dropped_rows[:20],
            "rows_dropped_total": len(self.invalid) + len(self.dropped_rows),
            "rows_truncated": flags["truncated"],
            "rows_reply_cut": flags["reply_cut"],
            "cutoff_len": self.cutoff_len,
            "duplicate_rows": len(digests) - len(np.unique(digests)),
            "thinking_rows": flags["thinking"],
            "non_thinking_rows": kept - flags["thinking"],
            "reasoning_dropped_rows": flags["reasoning_dropped"],
            "template_kind": self.template_kind,
            "enable_thinking": self.thinking,
            # Thinking mode, rows whose trained replies hold no reasoning: the model learns an empty think block.
            "rows_without_reasoning": kept - flags["thinking"] if self.thinking else 0,
            # Earlier replies that the row's rendering does not hold as served, trained in sequences of their own
            # (data/encode.py): how many such sequences, and their tokens (the cost, in `tokens` too).
            "sequences": len(lengths),
            "extra_sequences": self.extra_sequences,
            "extra_sequence_tokens": self.extra_sequence_tokens,
            "tokens": tokens,
            "trained_tokens": trained,
            "trained_token_share": round(trained / tokens, 4) if tokens else 0.0,
            "length_percentiles": _percentiles(lengths),
        }


def build_report(loaded: LoadResult, encoded: list[Encoded], dropped: list[str], cutoff_len: int,
                 thinking: bool = False, template_kind: str | None = None) -> dict:
    """The report of rows held in memory. loaded: what was read; encoded: the kept rows' sequences (a row's
    first, then its further ones, continues_row set); dropped: 'source: reason' of encoded-then-dropped rows;
    thinking: the mode the rows were encoded in."""
    b = ReportBuilder(loaded.files, cutoff_len, thinking, template_kind)
    b.read(list(loaded.invalid), [c.format for c in loaded.conversations],
           b"".join(conversation_digest(c)[:b.DIGEST_BYTES] for c in loaded.conversations))
    b.kept([len(e.input_ids) for e in encoded], sum(e.num_trained for e in encoded),
           np.array([[getattr(e, f) for f in encoded_flags()] for e in encoded], dtype=bool).reshape(len(encoded),
                                                                                                len(encoded_flags())))
    b.dropped(dropped)
    return b.report()


def check_thresholds(report: dict, cfg) -> list[str]:
    """Problems that should fail the run, each naming the config key that sets the limit (cfg: its max_*_share)."""
    total = max(report["rows_read"], 1)
    checks = [
        ("rows dropped", report["rows_dropped_total"], cfg.max_dropped_share, "max_dropped_share"),
        (
            "rows with a reply cut by cutoff_len",
            report["rows_reply_cut"],
            cfg.max_truncated_share,
            "max_truncated_share",
        ),
        ("duplicate rows", report["duplicate_rows"], cfg.max_duplicate_share, "max_duplicate_share"),
        (
            "rows without reasoning in thinking mode (the model learns an empty think block)",
            report.get("rows_without_reasoning", 0),
            cfg.max_no_reasoning_share,
            "max_no_reasoning_share",
        ),
    ]
    # A hybrid template can train direct answers instead (auto is thinking on Qwen3.5 4B and up).
    hint = {"max_no_reasoning_share": ", or set enable_thinking: false to train direct answers"} \
        if report.get("template_kind") == "hybrid" else {}
    return [f"{n} of {total} {what} ({n / total:.1%}) exceeds {key}={limit}; fix the data or raise "
            f"{key}{hint.get(key, '')}"
            for what, n, limit, key in checks if n / total > limit]


def format_report(report: dict) -> str:
    lp = report["length_percentiles"]
    fmt = ", ".join(f"{k} {v}" for k, v in report["rows_per_format"].items())
    lines = [
        f"rows read {report['rows_read']} ({fmt}); kept {report['rows_kept']}",
        f"dropped {report['rows_dropped_total']}: invalid {report['invalid_rows']}, no trained token within cutoff_len "
        f"{report['dropped_no_trained_tokens']}",
        f"truncated at cutoff_len={report['cutoff_len']}: {report['rows_truncated']} (reply cut: "
        f"{report['rows_reply_cut']}); exact duplicates: {report['duplicate_rows']}",
        f"chat template: {report.get('template_kind', '?')}, enable_thinking "
        f"{str(report.get('enable_thinking', False)).lower()}; "
        f"rows with trained reasoning {report['thinking_rows']}, without {report['non_thinking_rows']}; "
        f"rows whose reasoning is not rendered {report['reasoning_dropped_rows']}",
        f"tokens {report['tokens']}, trained {report['trained_tokens']} ({report['trained_token_share']:.1%})",
    ]
    if lp:
        lines.append("length " + ", ".join(f"{k} {v}" for k, v in lp.items()))
    if report["reasoning_dropped_rows"]:
        lines.append(f"note: {report['reasoning_dropped_rows']} row(s) have reasoning the model will not see or learn "
                     "(thinking off, a never-thinking template, or history turns whose think block the template drops)")
    if report.get("rows_without_reasoning"):
        lines.append(f"note: {report['rows_without_reasoning']} row(s) have no reasoning in thinking mode: the model "
                     "learns to answer them with an empty think block (limit: max_no_reasoning_share)")
    if report.get("extra_sequences"):
        lines.append(f"note: {report['extra_sequences']} extra sequence(s) train earlier replies after their own "
                     "served "
                     "prompt (the template renders them otherwise in a later turn's history): "
                     f"{report['extra_sequence_tokens']} of the {report['tokens']} tokens "
                     f"({report['extra_sequence_tokens'] / max(report['tokens'], 1):.1%}); train_on: last trains only "
                     "final replies")
    for ex in report["invalid_examples"] + report["dropped_examples"]:
        lines.append(f"  - {ex}")
    return "\n".join(lines)


def save_report(report: dict, path: Path) -> None:
    write_text(path, json.dumps(report, indent=2, ensure_ascii=False))


def enforce(report: dict, cfg) -> None:
    problems = check_thresholds(report, cfg)
    if problems:
        raise UserError("data report fails its thresholds:\n" + "\n".join(f"  - {p}" for p in problems))
