"""Render a Conversation with the model's own chat template and build its exact label mask.

The rule (README "What is trained"): for each trained assistant reply, the tokens before it are exactly the
prompt a server builds for it, `tokenizer(apply_chat_template(messages_before_it, add_generation_prompt=True,
enable_thinking=mode, **template options))`, and the trained tokens are what the model must write after that
prompt, through the token that closes its turn (`<|im_end|>`). Never system / user / tool text, never the turn
header.

A row is encoded as one or more sequences. The first is the whole conversation, rendered once (Qwen's
templates are not prefix-stable: think blocks appear only after the last user query); it trains every reply
whose served prompt it holds exactly. A reply that the template renders in history differently from how it
was served gets a sequence of its own: the conversation up to and including that reply, where it is the last
reply and so follows its served prompt (it may train earlier replies of its own that fit). Two ways a reply
does not fit in a longer sequence:
- its text differs: Qwen3 and Qwen3.5 templates drop the think block of replies before the last user query
  (and Qwen3's the empty one of a reply with no reasoning after it), so the served prompt of such a reply is
  not a prefix of the longer rendering;
- its tokens differ: a thinking template's empty think block is '<think>\n\n</think>', where '\n\n' is one
  token, while the reply's own served prompt ends in '<think>\n'; the later reply's served prompt holds the
  merged token, the earlier reply's trained tokens the split one. One sequence cannot hold both.
In each sequence, replies are chosen from the last one back: a reply is trained there when the sequence starts
with its served prompt text, and cutting the text at its start keeps the tokens of every later chosen reply's
served prompt (the text is tokenized in pieces cut at each reply's start, so no token crosses a prompt/reply
edge, and the pieces' tokens before each reply are its served prompt's own tokens, checked). The further
sequences come back in Encoded.more (continues_row set); the data report counts them and their tokens.
Where the template gets its header, turn end and prompts: data/template.py.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..errors import UserError
from .formats import Conversation
from .template import render_text, served_prompt_ids, template_rules

IGNORE_INDEX = -100
# Part of the data cache's key (data/cache.py): bump it whenever encode() can give other rows for the same input.
# 3: one sequence per reply that its row's rendering does not hold as served; tool-call arguments given as a
# JSON string are rendered as the object; template options.
ENCODE_VERSION = 3
# The message keys a chat template is given (a reader may keep others, such as a turn's loss weight).
TEMPLATE_KEYS = ("role", "content", "reasoning_content", "tool_calls")


@dataclass
class EncodeOptions:
    cutoff_len: int = 4096
    enable_thinking: bool = False  # the resolved mode (template.resolve_thinking), never 'auto'
    train_on: str = "all"  # "all" assistant turns, or only the "last"
    preserve_thinking: bool | None = None  # the run's template options (template.TEMPLATE_OPTIONS); None: the
    reasoning_effort: str | None = None  # template's own default


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False  # tokens past cutoff_len were cut
    reply_cut: bool = False  # ...and some of them were trained tokens
    reasoning_dropped: bool = False  # the row has reasoning that the rendered text does not hold
    thinking: bool = False  # a non-empty reasoning block is trained
    continues_row: bool = False  # a further sequence of the row before it (module doc)
    conversation: Conversation | None = field(default=None, repr=False)  # the row it came from
    more: list = field(default_factory=list, repr=False)  # the row's further sequences (Encoded, continues_row)

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


def render(conv: Conversation, tokenizer, enable_thinking: bool, options=None) -> tuple[str, bool]:
    """The conversation as the chat template renders it, and whether reasoning was removed (options: the run's
    template options, template.template_kwargs)."""
    messages, dropped = template_messages(conv.messages, enable_thinking)
    return render_text(tokenizer, messages, False, enable_thinking, conv.tools, options), dropped


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


@dataclass
class Sequence:
    """One sequence of a row: the rendering of messages[:last + 1], and the replies trained in it."""

    text: str
    turns: dict  # {message index: (body start, end after the closing token)} of its assistant turns
    spans: list  # [(message index, start, end)] of its trained replies, in order; start = len(served prompt)
    ids: list
    labels: list


def _pieces(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(enc["input_ids"], enc["offset_mapping"]))


def _sequence(
    tokenizer, text: str, turns: dict, candidates: list[int], replies: dict[int, tuple[str, int]]
) -> Sequence:
    """The sequence of `text` training the candidates that fit (module doc), chosen from the last back.
    replies: {message index: (the rendering through the reply's closing token when it is the last reply, the
    length of its served prompt)}; a sequence's own last reply always fits its text."""
    chosen, pieces = [], None  # pieces: tokens of text[:first cut], then of each piece between cuts, to the end
    for i in sorted(candidates, reverse=True):
        own, cut = replies[i]
        if not text.startswith(own):  # rendered otherwise in this longer conversation's history
            continue
        if not chosen:
            pieces = _pieces(tokenizer, [text[:cut], text[cut:]])
        else:
            left, right = _pieces(tokenizer, [text[:cut], text[cut:chosen[-1][1]]])
            if left[0] + right[0] != pieces[0][0]:  # the cut moves a token of a later reply's served prompt
                continue
            pieces[:1] = [left, right]
        chosen.append((i, cut, len(own)))
    chosen.reverse()
    ids, labels = [], []
    for k, (piece_ids, offsets) in enumerate(pieces or [_pieces(tokenizer, [text])[0]]):
        n_trained = 0
        if k > 0:
            _, start, end = chosen[k - 1]
            n_trained = bisect.bisect_left([a for a, _ in offsets], end - start)
            if n_trained and offsets[n_trained - 1][1] > end - start:
                raise EncodeError("a token crosses the end of a trained reply; the reply and the text "
                                  "after it do not tokenize apart")
        ids += piece_ids
        labels += piece_ids[:n_trained] + [IGNORE_INDEX] * (len(piece_ids) - n_trained)
    return Sequence(text, turns, chosen, ids, labels)


def _holds_reasoning(text: str, start: int, end: int, message: dict) -> bool:
    """The rendered text [start, end) of a reply holds its reasoning, before its content."""
    reasoning, content = (message.get("reasoning_content") or "").strip("\n"), (message.get("content") or "").strip()
    region = text[start:end]
    if content and (at := region.rfind(content)) != -1:
        region = region[:at]
    return bool(reasoning) and reasoning in region


def encode(conv: Conversation, tokenizer, opts: EncodeOptions) -> Encoded:
    """The row's first sequence, its further ones in .more (module doc)."""
    import jinja2

    try:
        return _encode(conv, tokenizer, opts)
    except EncodeError as e:
        raise EncodeError(f"{conv.source or 'row'}: (template): {e}") from None
    except jinja2.TemplateError as e:  # the template's own raise_exception (Qwen3.5: a system turn not first, ...)
        raise EncodeError(f"{conv.source or 'row'}: (template): the chat template refuses the row: "
                          f"{str(e).strip() or type(e).__name__}") from None


def _encode(conv: Conversation, tokenizer, opts: EncodeOptions) -> Encoded:
    rules = template_rules(tokenizer)
    _check_tools_rendered(conv, rules)
    messages, _ = template_messages(conv.messages, opts.enable_thinking)
    render = lambda n, generation: render_text(tokenizer, messages[:n], generation, opts.enable_thinking,  # noqa: E731
                                               conv.tools, opts)
    index = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    todo = [i for i in (index[-1:] if opts.train_on == "last" else index)
            # weight 0: the row's own choice, context; a reply that opens the conversation has no served prompt
            # (no server starts one without a message): context too.
            if conv.messages[i].get("weight", 1) != 0 and i > 0]
    texts = {len(messages) - 1: render(len(messages), False)}  # {last message: the rendering through it}
    replies = {}
    for i in todo:
        if i not in texts:
            texts[i] = render(i + 1, False)
        which = "the last reply" if i == len(messages) - 1 else f"the reply of message {i + 1}"
        replies[i] = _own_reply(texts[i], render(i, True), rules, len([j for j in index if j <= i]), which)
    sequences, last = [], len(messages) - 1  # the first sequence: the whole row
    while not sequences or todo:
        text, mine = texts[last], [i for i in index if i <= last]
        turns = dict(zip(mine, assistant_turns(text, rules.header, rules.end, len(mine))))
        seq = _sequence(tokenizer, text, turns, [i for i in todo if i <= last], replies)
        sequences.append(seq)
        done = {i for i, _, _ in seq.spans}
        todo = [i for i in todo if i not in done]
        last = max(todo, default=None)
    out = [_encoded(conv, seq, opts, messages) for seq in sequences]
    # Reasoning the model never sees or learns: of a trained reply, where it is trained; of another, in the row.
    held = {i: _holds_reasoning(seq.text, *seq.turns[i], messages[i]) for seq in reversed(sequences) for i in seq.turns}
    held.update({i: _holds_reasoning(seq.text, s, e, messages[i]) for seq in sequences for i, s, e in seq.spans})
    dropped = any(conv.messages[i].get("reasoning_content") and not held[i] for i in index)
    for k, e in enumerate(out):
        e.reasoning_dropped, e.continues_row = dropped, k > 0
    out[0].more = out[1:]
    return out[0]


def _own_reply(text: str, prompt: str, rules, n_turns: int, which: str) -> tuple[str, int]:
    """(text through the closing token of its last reply, where that reply starts): `text` renders the
    conversation up to a reply, `prompt` is the reply's served prompt. The reply starts right after the prompt,
    which the rendering must start with, inside the reply's turn."""
    body, end = assistant_turns(text, rules.header, rules.end, n_turns)[-1]
    if not (text.startswith(prompt) and body <= len(prompt) < end):
        raise EncodeError(f"the chat template renders {which} unlike the prompt a server builds for it (the prompt "
                          f"ends {prompt[-30:]!r}); the row cannot be trained on its served prompt")
    return text[:end], len(prompt)


def _encoded(conv: Conversation, seq: Sequence, opts: EncodeOptions, messages: list[dict]) -> Encoded:
    ids, labels = seq.ids, seq.labels
    thinking = any(_holds_reasoning(seq.text, s, e, messages[i]) for i, s, e in seq.spans)
    out = Encoded(ids, labels, conv.source, thinking=thinking, conversation=conv)
    if len(ids) > opts.cutoff_len:
        # Right truncation. A cut reply keeps its first tokens and loses its <|im_end|>: we never
        # append an artificial end-of-turn, which would teach the model to stop mid-answer.
        out.truncated = True
        out.reply_cut = any(x != IGNORE_INDEX for x in labels[opts.cutoff_len:])
        out.input_ids, out.labels = ids[: opts.cutoff_len], labels[: opts.cutoff_len]
    return out


def _check_tools_rendered(conv: Conversation, rules) -> None:
    """A template that ignores `tools` or `tool_calls` (template.TemplateRules) would drop them without a word:
    the tools vanish from the prompt, a call is trained as an empty reply. Refused, as unknown message keys are."""
    if conv.tools and not rules.renders_tools:
        raise EncodeError("tools: the chat template does not render `tools` (they would vanish from the prompt); "
                          "use a template that renders them, or remove them from the row")
    if not rules.renders_tool_calls and any(m.get("tool_calls") for m in conv.messages):
        raise EncodeError("tool_calls: the chat template does not render an assistant turn's `tool_calls` (the "
                          "call would be trained as an empty reply); use a template that renders them")


def inference_prompt_ids(conv: Conversation, tokenizer, enable_thinking: bool, options=None) -> list[int]:
    """Token ids of the prompt the model sees at inference for the conversation's last reply (options: the
    run's template options, template.template_kwargs)."""
    messages, _ = template_messages(conv.messages[:-1], enable_thinking)
    return served_prompt_ids(tokenizer, messages, enable_thinking, conv.tools, options)
