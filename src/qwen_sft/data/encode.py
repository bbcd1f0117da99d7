"""Render a Conversation with the model's own chat template and build its exact label mask.

This is the one module that knows Qwen3's chat rules. The text is rendered once, for the whole
conversation (Qwen3's template is not prefix-stable: the empty think block appears only after the
last user query), then tokenized once with character offsets; a token is trained when it starts
inside a trained character span. Trained spans:

- each assistant turn's content plus its closing <|im_end|> (never the '<|im_start|>assistant\\n'
  header, never the '\\n' after <|im_end|>, never system / user / tool text);
- enable_thinking=False (default): reasoning is removed from rows and the empty
  '<think>\\n\\n</think>\\n\\n' block the template writes sits on the PROMPT side, because at inference
  `apply_chat_template(..., add_generation_prompt=True, enable_thinking=False)` writes that block
  into the prompt and the model starts generating right after it;
- enable_thinking=True: the think block (with the row's reasoning, or empty) is on the TRAINED side,
  because at inference the prompt ends at '<|im_start|>assistant\\n' and the model writes '<think>'.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..errors import UserError
from .formats import Conversation

IGNORE_INDEX = -100
# Part of the data cache's key (data/cache.py): bump it whenever encode() can give other rows for the same input.
ENCODE_VERSION = 1
HEADER = "<|im_start|>assistant\n"
END = "<|im_end|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"


@dataclass
class EncodeOptions:
    cutoff_len: int = 4096
    enable_thinking: bool = False
    train_on: str = "all"  # "all" assistant turns, or only the "last"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False  # tokens past cutoff_len were cut
    reply_cut: bool = False  # ...and some of them were trained tokens
    reasoning_dropped: bool = False  # the row had reasoning and enable_thinking is off
    thinking: bool = False  # a non-empty reasoning block is trained
    conversation: Conversation | None = field(default=None, repr=False)  # the row it came from

    @property
    def num_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class EncodeError(UserError):
    """The rendered text does not have the shape this module relies on (e.g. a foreign template)."""


def _strip_reasoning(messages: list[dict]) -> tuple[list[dict], bool]:
    """The messages without reasoning_content (for showing a prompt; give the template template_messages)."""
    dropped = any(m.get("reasoning_content") for m in messages)
    return [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages], dropped


def template_messages(messages: list[dict], enable_thinking: bool) -> tuple[list[dict], bool]:
    """The messages as given to the chat template, and whether reasoning was removed.

    Every assistant turn gets reasoning_content as a string ('' when it has none, or when thinking is off
    and its reasoning is dropped): Qwen3's template splits a content that has no string reasoning_content
    at its last '</think>' and renders the part before it as reasoning. The reader has already taken an
    inline think block out of the content, so a '</think>' still in it is text of the answer; without
    this, thinking-off training would put a think block made of answer text on the trained side (and
    off the inference prompt), and an earlier turn would lose the text before the tag."""
    dropped = not enable_thinking and any(m.get("reasoning_content") for m in messages)
    out = []
    for m in messages:
        if m["role"] == "assistant":
            m = {**m, "reasoning_content": (m.get("reasoning_content") or "") if enable_thinking else ""}
        out.append(m)
    return out, dropped


def render(conv: Conversation, tokenizer, enable_thinking: bool) -> tuple[str, bool]:
    """The conversation as the chat template renders it, and whether reasoning was removed."""
    messages, dropped = template_messages(conv.messages, enable_thinking)
    text = tokenizer.apply_chat_template(messages, tools=conv.tools, tokenize=False, enable_thinking=enable_thinking)
    return text, dropped


def trained_spans(text: str, n_assistant: int, enable_thinking: bool) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant turn's trained text, in order."""
    spans, pos = [], 0
    while (start := text.find(HEADER, pos)) != -1:
        body = start + len(HEADER)
        end = text.find(END, body)
        if end == -1:
            raise EncodeError("assistant turn without <|im_end|> in the rendered template")
        if not enable_thinking and text.startswith(EMPTY_THINK, body):
            body += len(EMPTY_THINK)  # prompt side: the inference prompt ends with this block
        spans.append((body, end + len(END)))
        pos = end
    if len(spans) != n_assistant:
        raise EncodeError(f"the chat template rendered {len(spans)} assistant turns for {n_assistant} assistant messages")
    return spans


def encode(conv: Conversation, tokenizer, opts: EncodeOptions) -> Encoded:
    text, dropped = render(conv, tokenizer, opts.enable_thinking)
    n_assistant = sum(m["role"] == "assistant" for m in conv.messages)
    spans = trained_spans(text, n_assistant, opts.enable_thinking)
    if opts.train_on == "last":
        spans = spans[-1:]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts = [s for s, _ in offsets]
    labels = [IGNORE_INDEX] * len(ids)
    for lo, hi in spans:
        first, last = bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)
        # A token crossing a span edge would mean training tokens the model never emits at inference.
        if (first > 0 and offsets[first - 1][1] > lo) or (last > 0 and offsets[last - 1][1] > hi):
            raise EncodeError(f"{conv.source}: a token crosses the edge of a trained span; the prompt and reply do not tokenize apart")
        labels[first:last] = ids[first:last]
    # The template keeps reasoning only after the last user query; judge by what is trained.
    thinking = opts.enable_thinking and any(text.startswith("<think>", lo) and not text.startswith(EMPTY_THINK, lo)
                                            for lo, _ in spans)
    out = Encoded(ids, labels, conv.source, reasoning_dropped=dropped, thinking=thinking, conversation=conv)
    if len(ids) > opts.cutoff_len:
        # Right truncation. A cut reply keeps its first tokens and loses its <|im_end|>: we never
        # append an artificial end-of-turn, which would teach the model to stop mid-answer.
        out.truncated = True
        out.reply_cut = any(x != IGNORE_INDEX for x in labels[opts.cutoff_len:])
        out.input_ids, out.labels = ids[: opts.cutoff_len], labels[: opts.cutoff_len]
    return out


def inference_prompt_ids(conv: Conversation, tokenizer, enable_thinking: bool) -> list[int]:
    """Token ids of the prompt the model sees at inference for the conversation's last reply."""
    messages, _ = template_messages(conv.messages[:-1], enable_thinking)
    enc = tokenizer.apply_chat_template(messages, tools=conv.tools, tokenize=True, add_generation_prompt=True,
                                        enable_thinking=enable_thinking)
    return list(enc["input_ids"])
