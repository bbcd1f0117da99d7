"""The data report: what the training run will actually see, and thresholds that fail the run."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from ..errors import UserError
from .encode import Encoded
from .formats import Conversation, LoadResult


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731 nearest rank
    return {"min": s[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1], "mean": round(sum(s) / len(s), 1)}


def conversation_hash(conv: Conversation) -> str:
    return hashlib.sha256(json.dumps(conv.to_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def build_report(loaded: LoadResult, encoded: list[Encoded], dropped: list[str], cutoff_len: int,
                 thinking: bool = False) -> dict:
    """loaded: what was read; encoded: rows kept; dropped: 'source: reason' of encoded-then-dropped rows;
    thinking: the mode the rows were encoded in."""
    total = len(loaded.conversations) + len(loaded.invalid)
    hashes = Counter(conversation_hash(c) for c in loaded.conversations)
    duplicates = sum(n - 1 for n in hashes.values())
    lengths = [len(e.input_ids) for e in encoded]
    trained = sum(e.num_trained for e in encoded)
    tokens = sum(lengths)
    return {
        "files": loaded.files,
        "rows_read": total,
        "rows_per_format": dict(loaded.rows_per_format),
        "rows_kept": len(encoded),
        "invalid_rows": len(loaded.invalid),
        "invalid_examples": loaded.invalid[:20],
        "dropped_no_trained_tokens": len(dropped),
        "dropped_examples": dropped[:20],
        "rows_dropped_total": len(loaded.invalid) + len(dropped),
        "rows_truncated": sum(e.truncated for e in encoded),
        "rows_reply_cut": sum(e.reply_cut for e in encoded),
        "cutoff_len": cutoff_len,
        "duplicate_rows": duplicates,
        "thinking_rows": sum(e.thinking for e in encoded),
        "non_thinking_rows": sum(not e.thinking for e in encoded),
        "reasoning_dropped_rows": sum(e.reasoning_dropped for e in encoded),
        "enable_thinking": thinking,
        # Thinking mode, rows whose trained replies hold no reasoning: the model learns an empty think block.
        "rows_without_reasoning": sum(not e.thinking for e in encoded) if thinking else 0,
        "history_turns": sum(e.history_turns for e in encoded),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_token_share": round(trained / tokens, 4) if tokens else 0.0,
        "length_percentiles": _percentiles(lengths),
    }


def check_thresholds(report: dict, cfg) -> list[str]:
    """Problems that should fail the run, each naming the config key that sets the limit (cfg: its max_*_share)."""
    total = max(report["rows_read"], 1)
    checks = [
        ("rows dropped", report["rows_dropped_total"], cfg.max_dropped_share, "max_dropped_share"),
        ("rows with a reply cut by cutoff_len", report["rows_reply_cut"], cfg.max_truncated_share, "max_truncated_share"),
        ("duplicate rows", report["duplicate_rows"], cfg.max_duplicate_share, "max_duplicate_share"),
        ("rows without reasoning in thinking mode (the model learns an empty think block)",
         report.get("rows_without_reasoning", 0), cfg.max_no_reasoning_share, "max_no_reasoning_share"),
    ]
    return [f"{n} of {total} {what} ({n / total:.1%}) exceeds {key}={limit}; fix the data or raise {key}"
            for what, n, limit, key in checks if n / total > limit]


def format_report(report: dict) -> str:
    lp = report["length_percentiles"]
    fmt = ", ".join(f"{k} {v}" for k, v in report["rows_per_format"].items())
    lines = [
        f"rows read {report['rows_read']} ({fmt}); kept {report['rows_kept']}",
        f"dropped {report['rows_dropped_total']}: invalid {report['invalid_rows']}, no trained token within cutoff_len {report['dropped_no_trained_tokens']}",
        f"truncated at cutoff_len={report['cutoff_len']}: {report['rows_truncated']} (reply cut: {report['rows_reply_cut']}); exact duplicates: {report['duplicate_rows']}",
        f"chat template: {report.get('template_kind', '?')}, enable_thinking {str(report.get('enable_thinking', False)).lower()}; "
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
    if report.get("history_turns"):
        lines.append(f"note: {report['history_turns']} earlier reply turn(s) trained as the template renders history "
                     "(without their served prompt's think block); train_on: last trains only final replies")
    for ex in report["invalid_examples"] + report["dropped_examples"]:
        lines.append(f"  - {ex}")
    return "\n".join(lines)


def save_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")


def enforce(report: dict, cfg) -> None:
    problems = check_thresholds(report, cfg)
    if problems:
        raise UserError("data report fails its thresholds:\n" + "\n".join(f"  - {p}" for p in problems))
