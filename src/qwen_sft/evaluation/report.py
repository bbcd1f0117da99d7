"""An eval's results and the files it writes: per model (ModelEval: loss, generations, metrics, rates), both models
side by side (EvalReport), written as generations.jsonl, report.md and metrics.json under --out, and shown as a
table. Torch-free."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.encode import _strip_reasoning
from ..data.formats import Conversation, expects_reasoning, prompt_text, reference_text
from ..errors import UserError
from ..fileio import replacing, write_text
from ..runfiles import RATE_KEYS
from .metrics import (
    CJK_SHARE_THRESHOLD, HIGHER_IS_BETTER, Generation, LossResult, Rate, behavior_rates, corpus_bleu,
    detect_language, missing_reasoning, rouge_l, split_reasoning, unexpected_reasoning,
)

EVAL_ROOT = Path("sft/outputs/eval")

@dataclass
class ModelEval:
    role: str  # "base" | "tuned"
    path: str
    loss: LossResult
    generations: list[Generation]
    rates: dict[str, Rate] = field(default_factory=dict)
    rouge_l: float = 0.0
    bleu: float = 0.0
    bleu_tokenize: str = "13a"

    def values(self) -> dict[str, float | None]:
        return {"loss": self.loss.loss, "perplexity": self.loss.perplexity, "rouge_l": self.rouge_l,
                "bleu": self.bleu, **{k: r.value for k, r in self.rates.items()}}

    def to_json(self) -> dict:
        return {"path": self.path, **self.values(), "trained_tokens": self.loss.tokens,
                "bleu_tokenize": self.bleu_tokenize,
                "counts": {k: [r.hits, r.total] for k, r in self.rates.items()}}


def score(role: str, path: str, loss: LossResult, generations: list[Generation],
          conversations: list[Conversation], enable_thinking: bool) -> ModelEval:
    refs = [reference_text(c) for c in conversations]
    answers = [split_reasoning(g.text)[1] for g in generations]
    m = ModelEval(role, path, loss, generations, behavior_rates(generations, conversations, enable_thinking))
    m.rouge_l = sum(rouge_l(a, r) for a, r in zip(answers, refs)) / len(refs) if refs else 0.0
    m.bleu, m.bleu_tokenize = corpus_bleu(answers, refs)
    return m


@dataclass
class EvalReport:
    model: str
    data: list[str]
    conversations: list[Conversation]
    enable_thinking: bool
    max_new_tokens: int
    tuned: ModelEval
    base: ModelEval
    rows_in_data: int = 0
    failures: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    template_kind: str = ""  # hybrid | instruct | thinking (data/template.py)

    def to_json(self) -> dict:
        return {"model": self.model, "base_model": self.base.path, "data": self.data, "rows": len(self.conversations),
                "rows_in_data": self.rows_in_data, "enable_thinking": self.enable_thinking,
                "template_kind": self.template_kind,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy",
                "language_cjk_share_threshold": CJK_SHARE_THRESHOLD,
                "tuned": self.tuned.to_json(), "base": self.base.to_json(),
                "thresholds": self.thresholds, "failed": self.failures}

    def rows(self):
        for i, conv in enumerate(self.conversations):
            row = {"index": i, "source": conv.source, "prompt": _prompt_messages(conv, self.enable_thinking),
                   "prompt_language": detect_language(prompt_text(conv)), "reference": reference_text(conv),
                   "reference_reasoning": conv.messages[-1].get("reasoning_content")}
            for m in (self.base, self.tuned):
                g = m.generations[i]
                reasoning, answer = split_reasoning(g.text)
                row[m.role] = {"text": g.text, "answer": answer, "reasoning": reasoning, "stopped": g.stopped,
                               "new_tokens": len(g.token_ids), "language": detect_language(answer),
                               "rouge_l": rouge_l(answer, reference_text(conv)),
                               **_flags(g, conv, self.enable_thinking)}
            yield row

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        out = []
        b, t = self.base.values(), self.tuned.values()
        for key in ("loss", "perplexity", "rouge_l", "bleu", *RATE_KEYS):
            if key in RATE_KEYS:
                bs, ts = str(self.base.rates[key]), str(self.tuned.rates[key])
            else:
                bs, ts = _fmt(b[key]), _fmt(t[key])
            limit = self.thresholds.get(key)
            limit_s = "" if limit is None else f"{'>=' if key in HIGHER_IS_BETTER else '<='} {limit:g}"
            if limit is not None:
                failed = any(f.startswith(key + " ") for f in self.failures)
                limit_s += " FAIL" if failed else (" n/a" if t[key] is None else " ok")
            out.append((key, bs, ts, limit_s))
        return out

    def markdown(self) -> str:
        lines = [f"# Evaluation of `{self.model}`", "",
                 f"- data: {', '.join(f'`{d}`' for d in self.data)}: {len(self.conversations)} rows"
                 + (f" (the first {len(self.conversations)} of {self.rows_in_data})"
                    if self.rows_in_data > len(self.conversations) else ""),
                 f"- base: `{self.base.path}`; tuned: `{self.tuned.path}`",
                 f"- chat template: {self.template_kind}; enable_thinking: {self.enable_thinking}; greedy decoding, "
                 f"at most {self.max_new_tokens} new "
                 f"tokens; BLEU tokenize: {self.tuned.bleu_tokenize}", "",
                 "## Summary", "", "| metric | base | tuned | threshold |", "|---|---|---|---|"]
        lines += [f"| {k} | {b} | {t} | {lim} |" for k, b, t, lim in self.table_rows()]
        lines += ["", "loss / perplexity: on the trained tokens of every row (lower is better). rouge_l (0-1) and "
                  "bleu (0-100): the reply's answer against the row's reply. stop_rate, language_match: higher "
                  "is better; unexpected_reasoning, missing_reasoning: lower is better; n/a: no row applies. "
                  "See docs/evaluation.md.", ""]
        if self.failures:
            lines += ["## Failed thresholds", ""] + [f"- {f}" for f in self.failures] + [""]
        lines += ["## Generations", ""]
        for row in self.rows():
            conv = self.conversations[row["index"]]
            earlier = len(conv.messages) - 2
            lines += [f"### {row['index'] + 1}. {row['source']}", "",
                      f"**Prompt** (language {row['prompt_language'] or 'undetermined'}"
                      + (f"; {earlier} earlier message(s), see generations.jsonl" if earlier else "") + "):", "",
                      fenced(prompt_text(conv)), "", "**Reference:**", "", fenced(row["reference"]), ""]
            for role in ("base", "tuned"):
                r = row[role]
                flags = ["stopped" if r["stopped"] else f"cut at {r['new_tokens']} tokens",
                         f"language {r['language'] or 'undetermined'}", f"ROUGE-L {r['rouge_l']:.3f}"]
                if r["unexpected_reasoning"]:
                    flags.append("UNEXPECTED REASONING")
                if r["missing_reasoning"]:
                    flags.append("MISSING REASONING")
                lines += [f"**{role.capitalize()}** ({', '.join(flags)}):", "", fenced(r["text"]), ""]
        return "\n".join(lines) + "\n"


def _flags(g: Generation, conv: Conversation, enable_thinking: bool) -> dict:
    expects = expects_reasoning(conv)
    return {"unexpected_reasoning": unexpected_reasoning(g.text, enable_thinking, expects),
            "missing_reasoning": missing_reasoning(g.text, enable_thinking, expects)}


def _prompt_messages(conv: Conversation, enable_thinking: bool) -> list[dict]:
    return conv.messages[:-1] if enable_thinking else _strip_reasoning(conv.messages[:-1])[0]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def fenced(text: str) -> str:
    """The text in a Markdown code fence longer than any run of backticks in it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text if text else '(empty)'}\n{fence}"


# ---------------------------------------------------------------- the files


def default_out_dir(model: str | Path) -> Path:
    """sft/outputs/eval/{run} for sft/outputs/training/{run}/lora_adapters or a merged directory {run}."""
    p = Path(model)
    name = p.resolve().parent.name if p.name == "lora_adapters" else p.name
    return EVAL_ROOT / (name or "model")


REPORT_FILES = ("generations.jsonl", "report.md", "metrics.json")


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output directory whose report files would replace files eval did not write (a training run's
    metrics.json, say); an earlier eval report there is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory")
    existing = [n for n in REPORT_FILES if (out_dir / n).exists()]
    if not existing:
        return
    try:
        metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
        ours = isinstance(metrics, dict) and {"model", "base_model", "tuned"} <= metrics.keys()
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UserError(f"--out {out_dir}: already holds {', '.join(existing)} that eval did not write; "
                        "pass an empty or new directory")


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"generations": out_dir / "generations.jsonl", "report": out_dir / "report.md",
             "metrics": out_dir / "metrics.json"}
    with replacing(paths["generations"]) as f:
        for row in report.rows():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_text(paths["report"], report.markdown())
    write_text(paths["metrics"], json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return paths


def print_table(report: EvalReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.model}: {len(report.conversations)} rows, enable_thinking={report.enable_thinking}")
    for col in ("metric", "base", "tuned", "threshold"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for k, b, t, lim in report.table_rows():
        style = "red" if lim.endswith("FAIL") else None
        table.add_row(k, b, t, lim, style=style)
    Console(highlight=False, width=max(100, Console().width)).print(table)
