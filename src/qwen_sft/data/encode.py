"""Render a Conversation with the model's own chat template and build its exact label mask.

The rule (README "What is trained"): for each trained assistant reply, the tokens before it are exactly the
prompt a server builds for it, `tokenizer(apply_chat_template(messages_before_it, add_generation_prompt=True,
enable_thinking=mode))`, and the trained tokens are what the model must write after that prompt, through the
token that closes its turn (`<|im_end|>`). Never system / user / tool text, never the turn header.

The conversation is rendered once, whole (Qwen3's templates are not prefix-stable: think blocks appear only
after the last user query), and each trained reply is located in it:
- where the rendering starts with the reply's served prompt (always for the last reply; the encoder refuses a
  row where it does not), the reply starts right after that prompt. Depending on the template and mode, that
  puts the empty think block on the prompt side (hybrid, thinking off), the whole think block on the trained
  side (hybrid, thinking on), or '<think>\\n' on the prompt side (Thinking-2507);
- an earlier reply that the template renders differently from its served prompt (a history turn: Qwen3's
  templates drop its think block) is trained as rendered, right after its turn header.
The text is tokenized in pieces cut at each reply's start, so no token crosses a prompt/reply edge
(Thinking-2507 renders an empty think block as '<think>\\n\\n</think>', where '\\n\\n' is one token, while
its served prompt ends in '<think>\\n'), and the ids before each served reply are checked to be the served
prompt's own tokens.
Where the template gets its header, turn end and prompts: data/template.py.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import UserError
from .formats import Conversation
from .template import render_text, served_prompt_ids, template_rules

IGNORE_INDEX = -100
# Part of the data cache's key (data/cache.py): bump it whenever encode() can give other rows for the same input.
ENCODE_VERSION = 2
# The message keys a chat template is given (a reader may keep others, such as a turn's loss weight).
TEMPLATE_KEYS = ("role", "content", "reasoning_content", "tool_calls")


@dataclass
class EncodeOptions:
    cutoff_len: int = 4096
    enable_thinking: bool = False  # the resolved mode (template.resolve_thinking), never 'auto'
    train_on: str = "all"  # "all" assistant turns, or only the "last"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False  # tokens past cutoff_len were cut
    reply_cut: bool = False  # ...and some of them were trained tokens
    reasoning_dropped: bool = False  # the row has reasoning that the rendered text does not hold
    thinking: bool = False  # a non-empty reasoning block is trained
    history_turns: bool = False  # an earlier reply is trained as rendered in history, unlike its served prompt
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
        m = {k: v for k, v in m.items() if k in TEMPLATE_KEYS}
        if m["role"] == "assistant":
            m["reasoning_content"] = (m.get("reasoning_content") or "") if enable_thinking else ""
        out.append(m)
    return out, dropped


def render(conv: Conversation, tokenizer, enable_thinking: bool) -> tuple[str, bool]:
    """The conversation as the chat template renders it, and whether reasoning was removed."""
    messages, dropped = template_messages(conv.messages, enable_thinking)
    return render_text(tokenizer, messages, False, enable_thinking, conv.tools), dropped


@dataclass
class Span:
    """One trained reply in the rendered text: [start, end) through its closing token."""

    message: int  # its index in the conversation's messages
    start: int
    end: int
    served: str | None  # the served prompt (text[:start]) where the rendering agrees with it, else None


def assistant_turns(text: str, header: str, end_token: str, expected: int) -> list[tuple[int, int]]:
    """(body start, end after the closing token) of each assistant turn in the rendered text, in order."""
    turns, pos = [], 0
    while (head := text.find(header, pos)) != -1:
        body = head + len(header)
        end = text.find(end_token, body)
        if end == -1:
            raise EncodeError(f"assistant turn without {end_token} in the rendered template")
        turns.append((body, end + len(end_token)))
        pos = end
    if len(turns) != expected:
        raise EncodeError(f"the chat template rendered {len(turns)} assistant turns for {expected} assistant messages")
    return turns


def trained_spans(conv: Conversation, tokenizer, messages: list[dict], text: str, turns: dict[int, tuple[int, int]],
                  opts: EncodeOptions) -> Iterator[Span]:
    """The span of each trained reply (module doc), located by rendering its served prompt.
    turns: {message index: (body start, end)} of every assistant turn."""
    order = list(turns)
    for i in order[-1:] if opts.train_on == "last" else order:
        if conv.messages[i].get("weight", 1) == 0:  # the row's own choice: context, not trained
            continue
        body, end = turns[i]
        # A reply that opens the conversation has no served prompt (no server starts one without a message).
        prompt = render_text(tokenizer, messages[:i], True, opts.enable_thinking, conv.tools) if i else ""
        if prompt and text.startswith(prompt) and body <= len(prompt) < end:
            yield Span(i, len(prompt), end, prompt)
        elif i == order[-1]:
            raise EncodeError("the chat template renders the last reply unlike the prompt a server "
                              f"builds for it (the prompt ends {prompt[-30:]!r}); the row cannot be trained on its "
                              "served prompt")
        else:
            yield Span(i, body, end, None)


def _tokenize(tokenizer, text: str, spans: list[Span]) -> tuple[list[int], list[int]]:
    """ids and labels of text, tokenized in pieces cut at each span's start; each served span's prefix is
    checked to be its served prompt's tokens."""
    cuts = [s.start for s in spans]
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    # The first span's prefix is the first piece itself; later served prompts are tokenized whole to compare.
    checks = [(k, s.served) for k, s in enumerate(spans) if s.served is not None and k > 0]
    enc = tokenizer(pieces + [p for _, p in checks], add_special_tokens=False, return_offsets_mapping=True)
    ids, labels, span_at = [], [], []
    for k, piece in enumerate(pieces):
        piece_ids, offsets = enc["input_ids"][k], enc["offset_mapping"][k]
        n_trained = 0
        if k > 0:
            length = spans[k - 1].end - spans[k - 1].start
            n_trained = bisect.bisect_left([a for a, _ in offsets], length)
            if n_trained and offsets[n_trained - 1][1] > length:
                raise EncodeError("a token crosses the end of a trained reply; the reply and the text "
                                  "after it do not tokenize apart")
            span_at.append(len(ids))
        ids += piece_ids
        labels += piece_ids[:n_trained] + [IGNORE_INDEX] * (len(piece_ids) - n_trained)
    for n, (k, _) in enumerate(checks):
        if ids[:span_at[k]] != enc["input_ids"][len(pieces) + n]:
            raise EncodeError(f"the tokens before trained reply {k + 1} are not the tokens of its served "
                              "prompt (the template's text merges tokens across an earlier reply's start)")
    return ids, labels


def _holds_reasoning(text: str, start: int, end: int, message: dict) -> bool:
    """The rendered text [start, end) of a reply holds its reasoning, before its content."""
    reasoning, content = (message.get("reasoning_content") or "").strip("\n"), (message.get("content") or "").strip()
    region = text[start:end]
    if content and (at := region.rfind(content)) != -1:
        region = region[:at]
    return bool(reasoning) and reasoning in region


def encode(conv: Conversation, tokenizer, opts: EncodeOptions) -> Encoded:
    try:
        return _encode(conv, tokenizer, opts)
    except EncodeError as e:
        raise EncodeError(f"{conv.source or 'row'}: (template): {e}") from None


def _encode(conv: Conversation, tokenizer, opts: EncodeOptions) -> Encoded:
    rules = template_rules(tokenizer)
    messages, _ = template_messages(conv.messages, opts.enable_thinking)
    text = render_text(tokenizer, messages, False, opts.enable_thinking, conv.tools)
    index = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    turns = dict(zip(index, assistant_turns(text, rules.header, rules.end, len(index))))
    spans = list(trained_spans(conv, tokenizer, messages, text, turns, opts))
    ids, labels = _tokenize(tokenizer, text, spans)
    # Reasoning the rendered text does not hold (thinking off, a never-thinking template, or a history turn
    # whose think block the template drops), and reasoning that is trained.
    dropped = any(conv.messages[i].get("reasoning_content") and not _holds_reasoning(text, *turns[i], messages[i])
                  for i in index)
    thinking = any(_holds_reasoning(text, s.start, s.end, messages[s.message]) for s in spans)
    out = Encoded(ids, labels, conv.source, reasoning_dropped=dropped, thinking=thinking,
                  history_turns=any(s.served is None for s in spans), conversation=conv)
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
    return served_prompt_ids(tokenizer, messages, enable_thinking, conv.tools)
