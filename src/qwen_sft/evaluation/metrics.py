"""The text metrics of an eval, torch-free: scripts and language, reasoning in a reply, ROUGE-L (rouge-score, with a
tokenizer that keeps CJK text as one token per character and other text as one token per word), corpus BLEU
(sacrebleu, tokenize="zh" when any reference is CJK text), and the behavior rates (stop rate, unexpected /
missing reasoning, language match)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..data.formats import Conversation, expects_reasoning, prompt_text
from ..runfiles import RATE_KEYS

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
