"""The served-prompt rule, as a property over generated conversations, on every Qwen3 and Qwen3.5-generation
chat template.

For Qwen3's hybrid template in both thinking modes, Instruct-2507 and Thinking-2507, and the Qwen3.5 think
(4B and up) and nothink (0.8B, 2B) templates, Qwen3.6 and Qwen3.8 in both modes (with their template options),
on the real tokenizers, and for every row of the mask oracle's generator and adversarial cases (single and
multi-turn, system prompts, tools and tool calls, with and without reasoning) at several cutoffs,
independently of qwen_sft.data.encode:
- every trained reply (train_on, weight) is trained exactly once, in one of the row's sequences: the ids
  before it are exactly its served prompt's tokens (apply_chat_template(messages[:i],
  add_generation_prompt=True, enable_thinking=mode, **options)), and its trained tokens are the tokenization,
  alone, of what the template writes after that prompt when the reply is the conversation's last, through
  <|im_end|>;
- nothing else is trained; the first sequence decodes to the whole conversation's rendering, every other one
  to the rendering of the conversation up to one of its replies;
- a cutoff keeps a prefix of each sequence.
Before #22 a reply that the template renders in a later turn's history otherwise than as served was trained as
rendered there (Qwen3.5 think, thinking on: a tool-call row was refused): this test fails there.
"""

import copy

import jinja2
import pytest

from qwen_sft.assets import qwen3_5_checkpoint_dir, qwen3_tokenizer_dir
from qwen_sft.data.encode import IGNORE_INDEX, EncodeError, EncodeOptions, encode
from qwen_sft.data.formats import Conversation, parse_row
from tests.unit.test_encode import sequences, trained_runs
from tests.unit.test_mask_oracle import CASES, random_rows

END = "<|im_end|>"
COMBOS = [("hybrid", False, {}), ("hybrid", True, {}), ("instruct-2507", False, {}), ("thinking-2507", True, {})]
QWEN3_5_COMBOS = [
    (c, t, {}) for c in ("Qwen3.5-4B", "Qwen3.5-0.8B", "Qwen3.6-27B", "Qwen3.8-27B") for t in (False, True)
]
OPTION_COMBOS = [
    ("Qwen3.6-27B", True, {"preserve_thinking": True}),
    ("Qwen3.8-27B", True, {"preserve_thinking": False}),
    ("Qwen3.8-27B", True, {"reasoning_effort": "low"}),
]


def _id(combo):
    variant, thinking, options = combo
    return f"{variant}-{'think' if thinking else 'plain'}" + "".join(f"-{k}={v}" for k, v in options.items())


def _load(variant):
    from qwen_sft.data.tokenizer import load_tokenizer

    path = qwen3_5_checkpoint_dir(variant) if variant.startswith("Qwen") else qwen3_tokenizer_dir(variant)
    return load_tokenizer(str(path))


@pytest.fixture(scope="module")
def tokenizers():
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = _load(variant)
        return cache[variant]
    return get


def _messages(conv, thinking):
    """The messages as the rule gives them to the template: reasoning as a string on every assistant turn
    ('' when thinking is off), so the template never re-splits an answer at '</think>'."""
    out = []
    for m in copy.deepcopy(conv.messages):
        m.pop("weight", None)
        if m["role"] == "assistant":
            m["reasoning_content"] = (m.get("reasoning_content") or "") if thinking else ""
        out.append(m)
    return out


def expected(conv, tok, thinking, train_on, options):
    """({served prompt ids: reply ids} of the trained replies, the renderings a sequence may be), by the rule."""
    msgs = _messages(conv, thinking)

    def render(n, generation):
        return tok.apply_chat_template(msgs[:n], tools=conv.tools, tokenize=False, add_generation_prompt=generation,
                                       enable_thinking=thinking, **options)

    index = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    replies = {}
    # weight 0: context; a reply with no message before it has no served prompt: context too
    trained = [i for i in (index[-1:] if train_on == "last" else index) if conv.messages[i].get("weight", 1) and i]
    for i in trained:
        own, prompt = render(i + 1, False), render(i, True)
        assert own.startswith(prompt), "the rendering of a reply as the last does not start with its served prompt"
        reply = own[len(prompt):own.index(END, len(prompt)) + len(END)]
        replies[tuple(tok(prompt, add_special_tokens=False).input_ids)] = tok(reply, add_special_tokens=False).input_ids
    return replies, [render(i + 1, False) for i in index if i == index[-1] or i in trained]


def problems(conv, tok, thinking, train_on, options=None):
    options = options or {}
    opts = EncodeOptions(cutoff_len=1 << 20, enable_thinking=thinking, train_on=train_on, **options)
    try:
        replies, renders = expected(conv, tok, thinking, train_on, options)
    except jinja2.TemplateError as refused:  # the template's own refusal (Qwen3.5: a system turn not first): the
        with pytest.raises(EncodeError) as info:  # encoder names it, one line, as an invalid row
            encode(conv, tok, opts)
        return [] if str(info.value).endswith(f"the chat template refuses the row: {refused}") else [str(info.value)]
    e = encode(conv, tok, opts)
    found, seen = [], set()
    if tok.decode(e.input_ids) != renders[-1]:
        found.append("the first sequence does not decode to the rendered row")
    for k, s in enumerate(sequences(e)):
        if k and tok.decode(s.input_ids) not in renders:
            found.append(f"sequence {k} does not decode to the rendering of the row up to one of its replies")
        if s.continues_row != (k > 0):
            found.append(f"sequence {k}: continues_row is {s.continues_row}")
        if any(lab not in (t, IGNORE_INDEX) for t, lab in zip(s.input_ids, s.labels)):
            found.append("a label differs from its input id")
        for a, b in trained_runs(s):  # a header always separates two trained replies: one run each
            prompt = tuple(s.input_ids[:a])
            if prompt not in replies:
                found.append(f"sequence {k}: a trained run {tok.decode(s.input_ids[a:b])[:30]!r} after a prompt that "
                             "is no trained reply's served prompt")
            elif s.input_ids[a:b] != replies[prompt]:
                found.append(f"sequence {k}: trained tokens {tok.decode(s.input_ids[a:b])[:30]!r} are not the reply "
                             f"{tok.decode(replies[prompt])[:30]!r} tokenized alone")
            elif prompt in seen:
                found.append(f"a reply is trained twice: {tok.decode(replies[prompt])[:30]!r}")
            seen.add(prompt)
    if replies.keys() - seen:
        found.append(f"{len(replies.keys() - seen)} trained repl(ies) are in no sequence")
    if not found:
        for s_k, s in enumerate(sequences(e)):
            runs = trained_runs(s)
            for cut in {len(s.input_ids) - 1, runs[-1][0] + 1, runs[0][0]}:
                c = encode(conv, tok, EncodeOptions(cutoff_len=cut, enable_thinking=thinking, train_on=train_on,
                                                    **options))
                got = sequences(c)[s_k]
                if (got.input_ids, got.labels) != (s.input_ids[:cut], s.labels[:cut]) or not got.truncated:
                    found.append(f"sequence {s_k}: cutoff_len={cut} does not keep a prefix")
    return found


def _rows():
    return random_rows(60, seed=2026) + [parse_row(row, None) for row in CASES.values()]


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS + QWEN3_5_COMBOS + OPTION_COMBOS, ids=_id)
def test_served_prompt_rule_on_generated_rows(tokenizers, combo):
    variant, thinking, options = combo
    tok = tokenizers(variant)
    bad = [f"{c.source or i} {train_on}: {p} :: {c.messages!r}" for i, c in enumerate(_rows())
           for train_on in ("all", "last") for p in problems(c, tok, thinking, train_on, options)]
    assert bad == []


@pytest.mark.parametrize("combo", COMBOS + QWEN3_5_COMBOS, ids=_id)
def test_weight_zero_turns_are_context(tokenizers, combo):
    variant, thinking, _ = combo
    conv = Conversation([{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "weight": 0},
                         {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}])
    assert problems(conv, tokenizers(variant), thinking, "all") == []
    e = encode(conv, tokenizers(variant), EncodeOptions(enable_thinking=thinking))
    assert [len(trained_runs(s)) for s in sequences(e)] == [1]


def test_weight_read_from_a_row_reaches_the_mask(tokenizers):
    row = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "weight": 0},
                        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "weight": 1}]}
    tok = tokenizers("hybrid")
    e = encode(parse_row(row, None), tok, EncodeOptions())
    assert tok.decode([t for t, lab in zip(e.input_ids, e.labels) if lab != IGNORE_INDEX]) == "A2<|im_end|>"


def test_thinking_2507_plain_qa_is_trained_after_the_open_think_block(tokenizers):
    """The issue's case: ordinary Q/A rows on Thinking-2507. The prompt side ends with '<think>\\n' (token 198,
    as served); the model learns to write '\\n</think>\\n\\n' and the answer."""
    tok = tokenizers("thinking-2507")
    e = encode(parse_row({"instruction": "Hi", "output": "Hello"}, None), tok, EncodeOptions(enable_thinking=True))
    (a, b), = trained_runs(e)
    assert tok.decode(e.input_ids[:a]).endswith("<|im_start|>assistant\n<think>\n")
    assert e.input_ids[a - 2:a] == tok("<think>\n", add_special_tokens=False).input_ids
    assert tok.decode(e.input_ids[a:b]) == "\n</think>\n\nHello<|im_end|>"
    assert not e.thinking
