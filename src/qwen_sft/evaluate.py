"""Evaluate a fine-tuned model on held-out rows: loss, reference metrics, behavior rates, template fidelity.

`qwen-sft eval MODEL_OR_ADAPTER --data D` (see docs/evaluation.md):

- held-out loss / perplexity over trained tokens: each row is encoded with our encoder in the model's
  thinking mode (the tokens training would train on), summed CausalLMLoss / trained-token count;
- greedy generations for each row's prompt (the conversation minus its last assistant reply) from the
  base model and the tuned model, side by side, written as JSONL and as a Markdown report;
- ROUGE-L (rouge-score, with a tokenizer that keeps CJK text as one token per character and other text
  as one token per word) and corpus BLEU (sacrebleu, tokenize="zh" when any reference is CJK text);
- behavior rates: stop rate, unexpected / missing reasoning, language match; thresholds fail the command;
- template fidelity: the tokens our encoder trains on agree with what a plain `AutoTokenizer` from the
  model directory renders at inference (check_template_fidelity).

log_sample_generations() is what the trainer calls at each evaluation to log a few greedy generations
to TensorBoard as text.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data.encode import (
    IGNORE_INDEX, EncodeOptions, _strip_reasoning, encode, template_messages,
)
from .data.formats import Conversation
from .data.template import served_options, served_thinking, template_kwargs, template_rules
from .errors import UserError
from .fileio import replacing, write_text
from .runfiles import RATE_KEYS, adapter_base_model, is_adapter_dir, read_run_meta, tokenizer_dir

log = logging.getLogger("qwen_sft")

DEFAULT_N = 50
DEFAULT_MAX_NEW_TOKENS = 512
EVAL_ROOT = Path("sft/outputs/eval")
IM_END = "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# ---------------------------------------------------------------- text: scripts, tokens, language

# Scripts written without spaces between words: one token per character (ROUGE-L) and one "unit" per
# character (language detector). Han (CJK unified ideographs, extensions A-B+, compatibility ideographs),
# Hiragana, Katakana. Hangul is written with spaces between words, so it is handled as words.
_CJK_CLASS = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u309f\u30a0-\u30ff\U00020000-\U0002ffff")
_CJK = re.compile(f"[{_CJK_CLASS}]")
_WORD = re.compile(r"[^\W_]+")  # runs of letters / digits (any script; CJK characters are split off first)
_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters only: the language detector's "words"
_CODE = re.compile(r"```.*?(```|\Z)|`[^`\n]*`", re.S)

# A text is CJK when at least this share of its units are CJK characters. Units: one per CJK character,
# one per run of other letters (a word); digits, punctuation and code are not counted. So a Chinese reply
# that names a few English terms stays CJK, and an English reply quoting a Chinese word stays "other".
CJK_SHARE_THRESHOLD = 0.5


def mixed_script_tokens(text: str) -> list[str]:
    """Lower-cased tokens: each CJK character on its own, other text split into words (letters/digits);
    punctuation dropped. rouge-score's default tokenizer keeps only [a-z0-9] and so drops all CJK text."""
    return _WORD.findall(_CJK.sub(lambda m: f" {m.group(0)} ", text.lower()))


class MixedScriptTokenizer:
    """rouge-score tokenizer (duck-typed: rouge_score only calls .tokenize) for mixed CJK / other text."""

    def tokenize(self, text: str) -> list[str]:
        return mixed_script_tokens(text)


def cjk_share(text: str) -> float | None:
    """Share of CJK characters among the text's units (CJK characters + other-letter words), code spans
    removed; None when the text has no letters at all (numbers, punctuation, empty)."""
    text = _CODE.sub(" ", text)
    cjk = len(_CJK.findall(text))
    words = len(_LETTERS.findall(_CJK.sub(" ", text)))
    return cjk / (cjk + words) if cjk + words else None


def detect_language(text: str) -> str | None:
    """'cjk' (Chinese / Japanese script), 'other' (any other letters), or None (no letters to judge)."""
    share = cjk_share(text)
    if share is None:
        return None
    return "cjk" if share >= CJK_SHARE_THRESHOLD else "other"


# ---------------------------------------------------------------- reasoning in replies


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a generated reply. reasoning is None when the reply has no <think> block;
    an unclosed block (cut by the token budget) is all reasoning, with an empty answer."""
    start = text.find(THINK_OPEN)
    if start == -1:
        if THINK_CLOSE in text:  # the <think> was in the prompt: everything before </think> is reasoning
            reasoning, answer = text.split(THINK_CLOSE, 1)
            return reasoning.strip(), answer.strip()
        return None, text.strip()
    rest = text[start + len(THINK_OPEN):]
    if THINK_CLOSE not in rest:
        return rest.strip(), text[:start].strip()
    reasoning, answer = rest.split(THINK_CLOSE, 1)
    return reasoning.strip(), (text[:start] + answer).strip()


def has_reasoning(text: str) -> bool:
    """The reply holds a <think> block with non-empty content."""
    reasoning, _ = split_reasoning(text)
    return bool(reasoning)


def unexpected_reasoning(text: str, enable_thinking: bool, expects_reasoning: bool) -> bool | None:
    """Reasoning where the row expects none; None when the row does expect reasoning (not applicable).

    Non-thinking mode: the prompt already ends with the empty think block, so a reply that opens another
    <think> (empty or not), or holds a non-empty think block anywhere, is a leak. Thinking mode, row
    without reasoning: the model is trained to write an empty block '<think>\\n\\n</think>', so only a
    non-empty block is a leak."""
    if enable_thinking and expects_reasoning:
        return None
    if not enable_thinking and text.lstrip().startswith(THINK_OPEN):
        return True
    return has_reasoning(text)


def missing_reasoning(text: str, enable_thinking: bool, expects_reasoning: bool) -> bool | None:
    """Thinking mode, the row has reasoning, the reply has none; None where not applicable."""
    if not (enable_thinking and expects_reasoning):
        return None
    return not has_reasoning(text)


def expects_reasoning(conv: Conversation) -> bool:
    """The row's last assistant reply carries reasoning."""
    return bool(conv.messages[-1].get("reasoning_content"))


def reference_text(conv: Conversation) -> str:
    """The expected answer: the last assistant reply's content (never its reasoning)."""
    return (conv.messages[-1].get("content") or "").strip()


def prompt_text(conv: Conversation) -> str:
    """The last user turn of the prompt (what the reply's language should follow)."""
    return next((m.get("content") or "" for m in reversed(conv.messages[:-1]) if m["role"] == "user"), "")


# ---------------------------------------------------------------- reference metrics


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge-score) over mixed_script_tokens; 0.0 when either side has no tokens."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MixedScriptTokenizer())
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def bleu_tokenize(references: list[str]) -> str:
    """'zh' when any reference is CJK text, else '13a'. sacrebleu's zh tokenizer splits CJK characters
    apart and tokenizes all other text exactly like 13a, so one corpus score stays right for a mix."""
    return "zh" if any(detect_language(r) == "cjk" for r in references) else "13a"


def corpus_bleu(predictions: list[str], references: list[str]) -> tuple[float, str]:
    """(sacrebleu corpus BLEU on its 0-100 scale, the tokenize used)."""
    import sacrebleu

    tokenize = bleu_tokenize(references)
    if not predictions:
        return 0.0, tokenize
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score), tokenize


# ---------------------------------------------------------------- behavior rates


@dataclass
class Rate:
    hits: int = 0
    total: int = 0  # rows the rate applies to

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def add(self, hit: bool | None) -> None:
        if hit is not None:
            self.total += 1
            self.hits += int(hit)

    def __str__(self) -> str:
        return "n/a" if self.value is None else f"{self.value:.3f} ({self.hits}/{self.total})"


@dataclass
class Generation:
    text: str  # decoded, special tokens skipped (<think> tags are ordinary tokens and stay), stripped
    token_ids: list[int]
    stopped: bool  # the last generated token is a stop token (generate.stop_ids), within max_new_tokens


def behavior_rates(generations: list[Generation], conversations: list[Conversation],
                   enable_thinking: bool) -> dict[str, Rate]:
    """stop_rate, unexpected_reasoning, missing_reasoning, language_match over paired rows."""
    rates = {k: Rate() for k in RATE_KEYS}
    for g, conv in zip(generations, conversations, strict=True):
        expects = expects_reasoning(conv)
        rates["stop_rate"].add(g.stopped)
        rates["unexpected_reasoning"].add(unexpected_reasoning(g.text, enable_thinking, expects))
        rates["missing_reasoning"].add(missing_reasoning(g.text, enable_thinking, expects))
        want, got = detect_language(prompt_text(conv)), detect_language(split_reasoning(g.text)[1])
        rates["language_match"].add(None if want is None or got is None else want == got)
    return rates


HIGHER_IS_BETTER = ("stop_rate", "language_match", "rouge_l", "bleu")
LOWER_IS_BETTER = ("unexpected_reasoning", "missing_reasoning", "loss", "perplexity")


# ---------------------------------------------------------------- template fidelity


class TemplateFidelityError(UserError):
    def __init__(self, model_dir, problems: list[str]):
        self.problems = list(problems)
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - len(shown)} more" if len(self.problems) > len(shown) else ""
        super().__init__(f"{model_dir}: template fidelity check failed: what training encoded differs from "
                         f"what the chat template gives at inference:\n  " + "\n  ".join(shown) + more)


def _template_copies_differ(d: Path) -> list[str]:
    # transformers 5 reads chat_template.jinja; older readers (and some servers) read tokenizer_config.json.
    jinja, cfg = d / "chat_template.jinja", d / "tokenizer_config.json"
    if not (jinja.is_file() and cfg.is_file()):
        return []
    try:
        embedded = json.loads(cfg.read_text()).get("chat_template")
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg}: unreadable JSON: {e}") from None
    if isinstance(embedded, str) and embedded != jinja.read_text():
        return [f"{d}: chat_template.jinja and the chat_template in tokenizer_config.json differ: transformers 5 "
                f"uses the .jinja file, older readers the other"]
    return []


def _first_diff(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _tok_at(tok, ids: list[int], i: int) -> str:
    return repr(tok.decode([ids[i]])) if i < len(ids) else "(end)"


def _short(text: str, n: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _mismatch(tok, where: str, what: str, ours: list[int], theirs: list[int], theirs_name: str) -> str | None:
    i = _first_diff(ours, theirs)
    if i is None:
        return None
    context = tok.decode(ours[max(0, i - 6):i])
    return (f"{where}: {what} token {i}: encoder {_tok_at(tok, ours, i)} vs {theirs_name} "
            f"{_tok_at(tok, theirs, i)} (after {context!r}; {len(ours)} vs {len(theirs)} tokens)")


def check_template_fidelity(model_dir: str | Path, conversations: list[Conversation],
                            enable_thinking: bool | None = None) -> list[str]:
    """Problems (empty: all good) where our encoder and plain inference disagree, for each row:

    - the encoder's tokens before the last reply's first trained token must equal
      AutoTokenizer.from_pretrained(dir).apply_chat_template(messages[:-1], add_generation_prompt=True,
      enable_thinking=mode), the prompt a server builds;
    - the last reply's trained tokens must equal the tokenization of the expected completion: the plain
      template's rendering of the whole conversation minus its rendering of the prompt, up to and
      including <|im_end|> (the messages as the encoder gives them to the template: template_messages).

    model_dir: an adapter or merged directory; its saved tokenizer is used (an adapter that saved none:
    its base's, as at inference). mode: enable_thinking, else qwen_sft.json's, else the template's default
    (data/template.py); an enable_thinking that contradicts qwen_sft.json, or a template of another kind than
    the one trained, is itself a problem.
    """
    from transformers import AutoTokenizer

    problems = []
    meta = read_run_meta(model_dir)
    stored = meta.get("enable_thinking")
    if enable_thinking is not None and stored is not None and bool(stored) != bool(enable_thinking):
        problems.append(f"the model was trained with enable_thinking={bool(stored)} ({Path(model_dir) / 'qwen_sft.json'}) "
                        f"but the rows are checked in enable_thinking={bool(enable_thinking)}: it would be "
                        f"served a prompt it was not trained on")
    src = tokenizer_dir(model_dir)
    problems += _template_copies_differ(Path(src))
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise UserError(f"{src}: cannot load the tokenizer: {str(e).strip().splitlines()[0]}") from None
    if not tok.chat_template:
        return problems + [f"{src}: the saved tokenizer has no chat template"]
    try:
        mode = served_thinking(tok, meta, enable_thinking, str(model_dir))
        options = served_options(tok, meta, mode, str(model_dir))
    except UserError as e:  # the saved template cannot serve the mode (or its options): no row can be checked
        return problems + [f"{src}: {e}"]
    kind, saved_kind = meta.get("template_kind"), template_rules(tok).kind
    if kind and kind != saved_kind:
        problems.append(f"the model was trained with a {kind} chat template, but {src} holds a "
                        f"{saved_kind} one: it would be served prompts it was not trained on")
    opts = EncodeOptions(cutoff_len=1 << 30, enable_thinking=mode, train_on="last", **options)
    for n, conv in enumerate(conversations, 1):
        where = f"row {n} ({conv.source or 'no source'}) {_short(prompt_text(conv))!r}"
        if conv.messages[-1]["role"] != "assistant":
            problems.append(f"{where}: does not end with an assistant reply")
            continue
        try:
            enc = encode(conv, tok, opts)
        except UserError as e:
            problems.append(f"{where}: the encoder cannot split this row: {e}")
            continue
        trained = [i for i, x in enumerate(enc.labels) if x != IGNORE_INDEX]
        if not trained:
            problems.append(f"{where}: the encoder trains no token of the last reply")
            continue
        ours_prompt, ours_reply = enc.input_ids[:trained[0]], enc.input_ids[trained[0]:trained[-1] + 1]
        messages = template_messages(conv.messages, mode)[0]  # as the encoder gives them to the template
        prompt_str = tok.apply_chat_template(messages[:-1], tools=conv.tools, tokenize=False,
                                             add_generation_prompt=True, **template_kwargs(mode, options))
        plain_prompt = list(tok.apply_chat_template(messages[:-1], tools=conv.tools, add_generation_prompt=True,
                                                    **template_kwargs(mode, options))["input_ids"])
        p = _mismatch(tok, where, "prompt", ours_prompt, plain_prompt, "chat template")
        if p:
            problems.append(p)
        full = tok.apply_chat_template(messages, tools=conv.tools, tokenize=False, **template_kwargs(mode, options))
        if not full.startswith(prompt_str):
            k = next((i for i, (a, b) in enumerate(zip(full, prompt_str)) if a != b), min(len(full), len(prompt_str)))
            problems.append(f"{where}: the template renders the conversation and its generation prompt "
                            f"differently from character {k} ({full[max(0, k - 20):k + 20]!r} vs "
                            f"{prompt_str[max(0, k - 20):k + 20]!r}): no prompt/completion split matches training")
            continue
        completion = full[len(prompt_str):]
        end = completion.rfind(IM_END)
        if end == -1:
            problems.append(f"{where}: the template writes no {IM_END} after the last reply")
            continue
        expected = list(tok(completion[:end + len(IM_END)], add_special_tokens=False)["input_ids"])
        r = _mismatch(tok, where, "reply", ours_reply, expected, "expected completion")
        if r:
            problems.append(r)
    return problems


def assert_template_fidelity(model_dir: str | Path, conversations: list[Conversation],
                             enable_thinking: bool | None = None) -> None:
    """check_template_fidelity, raising TemplateFidelityError (a UserError) listing the problems."""
    problems = check_template_fidelity(model_dir, conversations, enable_thinking)
    if problems:
        raise TemplateFidelityError(model_dir, problems)


# ---------------------------------------------------------------- model passes


def generate_greedy(model, tok, conv: Conversation, enable_thinking: bool, max_new_tokens: int,
                    options: dict | None = None) -> Generation:
    """Greedy reply to the row's prompt (the conversation minus its last reply, tools included, as training renders
    it: encode.template_messages), by generate.generate_reply: its text starts with the think block's opener
    where the prompt opened one (so that a reply cut before '</think>' is all reasoning, as it is), and it has
    stopped when it ends with one of the model's stop tokens. options: the template's other variables."""
    from .generate import generate_reply

    messages, _ = template_messages(conv.messages[:-1], enable_thinking)
    reply = generate_reply(model, tok, messages, max_new_tokens, enable_thinking, greedy=True, options=options,
                           tools=conv.tools)
    return Generation(reply.text, reply.token_ids, reply.stopped)


@dataclass
class LossResult:
    total: float = 0.0  # summed cross-entropy over trained tokens
    tokens: int = 0
    rows: int = 0
    truncated: int = 0  # rows cut at cutoff_len

    @property
    def loss(self) -> float | None:
        return self.total / self.tokens if self.tokens else None

    @property
    def perplexity(self) -> float | None:
        if self.loss is None:
            return None
        try:
            return math.exp(self.loss)
        except OverflowError:
            return math.inf


def heldout_loss(model, tok, conversations: list[Conversation], enable_thinking: bool,
                 cutoff_len: int = 4096, train_on: str = "all", options: dict | None = None) -> LossResult:
    """Summed CausalLMLoss over the trained tokens of each row (encoded as training encodes it)."""
    from .batching import collate_padding_free, num_targets
    from .loss import CausalLMLoss

    module = CausalLMLoss(model)
    device = next(model.parameters()).device
    opts = EncodeOptions(cutoff_len=cutoff_len, enable_thinking=enable_thinking, train_on=train_on, **(options or {}))
    res = LossResult()
    with torch.no_grad():
        for conv in conversations:
            first = encode(conv, tok, opts)
            res.rows += 1
            res.truncated += int(any(e.truncated for e in [first] + first.more))
            for enc in [first] + first.more:  # a row's sequences (data/encode.py), as training sees them
                n = num_targets(enc)
                if not n:
                    continue
                batch = {k: v.to(device) for k, v in collate_padding_free([enc]).items()}
                res.total += float(module(**batch))
                res.tokens += n
    return res


# ---------------------------------------------------------------- the report


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
                      _fenced(prompt_text(conv)), "", "**Reference:**", "", _fenced(row["reference"]), ""]
            for role in ("base", "tuned"):
                r = row[role]
                flags = ["stopped" if r["stopped"] else f"cut at {r['new_tokens']} tokens",
                         f"language {r['language'] or 'undetermined'}", f"ROUGE-L {r['rouge_l']:.3f}"]
                if r["unexpected_reasoning"]:
                    flags.append("UNEXPECTED REASONING")
                if r["missing_reasoning"]:
                    flags.append("MISSING REASONING")
                lines += [f"**{role.capitalize()}** ({', '.join(flags)}):", "", _fenced(r["text"]), ""]
        return "\n".join(lines) + "\n"


def _flags(g: Generation, conv: Conversation, enable_thinking: bool) -> dict:
    expects = expects_reasoning(conv)
    return {"unexpected_reasoning": unexpected_reasoning(g.text, enable_thinking, expects),
            "missing_reasoning": missing_reasoning(g.text, enable_thinking, expects)}


def _prompt_messages(conv: Conversation, enable_thinking: bool) -> list[dict]:
    return conv.messages[:-1] if enable_thinking else _strip_reasoning(conv.messages[:-1])[0]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _fenced(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text if text else '(empty)'}\n{fence}"


# ---------------------------------------------------------------- running it


def _base_of(model: str, meta: dict) -> str | None:
    if is_adapter_dir(model):
        return adapter_base_model(model)
    return meta.get("base_model")


def evaluate_model(model: str | Path, conversations: list[Conversation], *, base: str | None = None,
                   enable_thinking: bool | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   device: str | torch.device | None = None, data: list[str] | None = None,
                   rows_in_data: int | None = None) -> EvalReport:
    """Loss, greedy generations, metrics and rates for the tuned model and its base.

    model: an adapter or merged directory (or any causal LM). base: None uses the adapter's base (run as
    the adapter model with the adapter disabled: one load) or qwen_sft.json's base_model for a merged
    model. enable_thinking: None uses qwen_sft.json's, else the chat template's default (on for Thinking-2507). Models are evaluated one after
    the other so that only one is in memory (except the adapter case, which shares the base weights).
    """
    from .generate import load_for_chat
    from .model import load_causal_lm

    model = str(model)
    meta = read_run_meta(model)
    cutoff_len, train_on = int(meta.get("cutoff_len") or 4096), meta.get("train_on") or "all"
    is_adapter = is_adapter_dir(model)
    base_path = base or _base_of(model, meta)
    if not base_path:
        raise UserError(f"{model}: cannot tell the base model (no qwen_sft.json base_model); pass --base")
    shared_base = is_adapter and (base is None or _same_model(base, _base_of(model, meta)))

    def run(m, tok, role: str, path: str) -> ModelEval:
        log.info("eval: %s model: loss over %d rows, %d greedy generations", role, len(conversations),
                 len(conversations))
        loss = heldout_loss(m, tok, conversations, mode, cutoff_len, train_on, options)
        gens = [generate_greedy(m, tok, c, mode, max_new_tokens, options) for c in conversations]
        return score(role, path, loss, gens, conversations, mode)

    tuned_model, tok, trained_mode = load_for_chat(model, device=device)
    mode = trained_mode if enable_thinking is None else served_thinking(tok, meta, enable_thinking, model)
    options = served_options(tok, meta, mode, model)
    tuned = run(tuned_model, tok, "tuned", model)
    if shared_base:
        with tuned_model.disable_adapter():
            base_eval = run(tuned_model, tok, "base", base_path)
    else:
        dev, dtype = next(tuned_model.parameters()).device, next(tuned_model.parameters()).dtype
        del tuned_model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        base_model = load_causal_lm(base_path, dtype).to(dev).eval()
        # The tuned model's tokenizer renders both prompts: same prompt ids for both (the vocabulary is the
        # base's), and a base directory need not ship a chat template.
        base_eval = run(base_model, tok, "base", base_path)
        del base_model
    gc.collect()
    return EvalReport(model, list(data or []), list(conversations), mode, max_new_tokens, tuned, base_eval,
                      rows_in_data=rows_in_data if rows_in_data is not None else len(conversations),
                      template_kind=template_rules(tok).kind)


def _same_model(a: str, b: str | None) -> bool:
    if b is None:
        return False
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def parse_thresholds(fail_below: list[str] | None, fail_above: list[str] | None) -> dict[str, float]:
    """{'stop_rate': 0.9, ...} from key=value items; a key on the wrong side (or unknown) is a UserError."""
    out = {}
    for flag, items, allowed, other in (("--fail_below", fail_below, HIGHER_IS_BETTER, LOWER_IS_BETTER),
                                        ("--fail_above", fail_above, LOWER_IS_BETTER, HIGHER_IS_BETTER)):
        for item in items or []:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise UserError(f"{flag} {item}: expected key=value, e.g. stop_rate=0.9")
            if key in other:
                raise UserError(f"{flag} {key}: {key} is {'lower' if key in LOWER_IS_BETTER else 'higher'}-is-better; "
                                f"use {'--fail_above' if flag == '--fail_below' else '--fail_below'}")
            if key not in allowed:
                raise UserError(f"{flag} {key}: unknown; choose from {', '.join(allowed)}")
            try:
                out[key] = float(value)
            except ValueError:
                raise UserError(f"{flag} {item}: {value!r} is not a number") from None
    return out


def check_thresholds(values: dict[str, float | None], thresholds: dict[str, float]) -> tuple[list[str], list[str]]:
    """(failures, notes): a rate below its --fail_below (above its --fail_above) fails; a rate that applies
    to no row (n/a) cannot fail and is named in notes."""
    failures, notes = [], []
    for key, limit in thresholds.items():
        v = values.get(key)
        if v is None:
            notes.append(f"{key}: no row applies (n/a): threshold {limit:g} not checked")
        elif key in HIGHER_IS_BETTER and v < limit:
            failures.append(f"{key} {v:.4g} < {limit:g} (--fail_below)")
        elif key in LOWER_IS_BETTER and v > limit:
            failures.append(f"{key} {v:.4g} > {limit:g} (--fail_above)")
    return failures, notes


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


# ---------------------------------------------------------------- CLI


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", metavar="MODEL_OR_ADAPTER", help="a merged model directory or a LoRA adapter directory")
    parser.add_argument("--data", nargs="+", required=True, help="held-out data file(s) or directory (any format "
                        "prepare reads); each row's last assistant reply is the reference")
    parser.add_argument("--base", help="base model to compare with (default: the adapter's base, or base_model in "
                        "the merged model's qwen_sft.json)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="evaluate the first N rows (0: all)")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="greedy token budget per reply")
    parser.add_argument("--out", help="output directory (default: sft/outputs/eval/{run}/)")
    parser.add_argument("--fail_below", nargs="+", default=[], metavar="KEY=VALUE",
                        help="exit 1 when a tuned-model value is below: " + ", ".join(HIGHER_IS_BETTER))
    parser.add_argument("--fail_above", nargs="+", default=[], metavar="KEY=VALUE",
                        help="exit 1 when a tuned-model value is above: " + ", ".join(LOWER_IS_BETTER))
    parser.add_argument("--enable_thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="thinking mode (default: qwen_sft.json's; must agree with it when there is one)")
    parser.add_argument("--fidelity_only", action="store_true",
                        help="only run the template fidelity check (no model is loaded)")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from .data.formats import load_dataset

    if args.max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    if args.n < 0:
        raise UserError("--n must be 0 (all rows) or more")
    thresholds = parse_thresholds(args.fail_below, args.fail_above)
    if not args.fidelity_only:  # before the slow part
        check_out_dir(Path(args.out) if args.out else default_out_dir(args.model))
    loaded = load_dataset(args.data)
    convs = loaded.conversations[: args.n] if args.n else loaded.conversations
    assert_template_fidelity(args.model, convs, args.enable_thinking)
    print(f"template fidelity: {len(convs)} rows OK (prompt and trained reply tokens match the chat template "
          f"of {tokenizer_dir(args.model)})", flush=True)
    if args.fidelity_only:
        return 0
    report = evaluate_model(args.model, convs, base=args.base, enable_thinking=args.enable_thinking,
                            max_new_tokens=args.max_new_tokens, data=loaded.files,
                            rows_in_data=len(loaded.conversations))
    report.thresholds = thresholds
    report.failures, notes = check_thresholds(report.tuned.values(), thresholds)
    paths = write_report(report, Path(args.out) if args.out else default_out_dir(args.model))
    print_table(report)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {paths['report']}\ngenerations: {paths['generations']}\nmetrics: {paths['metrics']}", flush=True)
    for f in report.failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if report.failures else 0


# ---------------------------------------------------------------- training hook


def _unwrap(model):
    from .loss import CausalLMLoss

    for _ in range(3):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        if isinstance(model, CausalLMLoss):
            model = model.model
    return model


def _as_conversation(item) -> Conversation:
    if isinstance(item, Conversation):
        return item
    messages = list(item)
    if messages and messages[-1]["role"] != "assistant":  # a prompt without a reference
        messages.append({"role": "assistant", "content": ""})
    return Conversation(messages)


def log_sample_generations(model, tokenizer, conversations, writer, step: int, enable_thinking: bool = False,
                           max_new_tokens: int = 128, tag: str = "eval/samples",
                           options: dict | None = None) -> list[Generation]:
    """Greedy replies to a few rows' prompts, logged to TensorBoard as one Markdown text entry at `step`.

    model: the PEFT model (or CausalLMLoss / DDP around it); it is put in eval mode for the generation and
    back in train mode after when it was training. conversations: Conversation rows (or message lists);
    each prompt is the row minus its last assistant reply, which is shown as the reference. writer: a
    torch.utils.tensorboard SummaryWriter (anything with add_text). Call it on one process, with the
    model's parameters whole on it (not sharded by FSDP / ZeRO-3). Returns the generations.
    """
    m = _unwrap(model)
    convs = [_as_conversation(c) for c in conversations]
    was_training = m.training
    m.eval()
    try:
        gens = [generate_greedy(m, tokenizer, c, enable_thinking, max_new_tokens, options) for c in convs]
    finally:
        if was_training:
            m.train()
    parts = [f"step {step}, enable_thinking={enable_thinking}, greedy, at most {max_new_tokens} new tokens"]
    for i, (c, g) in enumerate(zip(convs, gens), 1):
        status = "stopped" if g.stopped else f"cut at {len(g.token_ids)} tokens"
        parts += [f"### sample {i}" + (f" ({c.source})" if c.source else ""), "**prompt**", _fenced(prompt_text(c))]
        if reference_text(c):
            parts += ["**reference**", _fenced(reference_text(c))]
        parts += [f"**generated** ({status})", _fenced(g.text)]
    writer.add_text(tag, "\n\n".join(parts), step)
    return gens
