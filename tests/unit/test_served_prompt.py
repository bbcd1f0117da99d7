"""The served-prompt rule, as a property over generated conversations, on every Qwen3 chat template.

For the hybrid template in both thinking modes, Instruct-2507 and Thinking-2507 (the real templates, the real
tokenizer), and for every row of the mask oracle's generator and adversarial cases (single and multi-turn,
system prompts, tools and tool calls, with and without reasoning) at several cutoffs, independently of
qwen_sft.data.encode:
- the conversation's rendering starts with the served prompt of its last reply
  (apply_chat_template(messages[:-1], add_generation_prompt=True, enable_thinking=mode));
- for every trained reply whose served prompt the rendering starts with, the ids before its first trained token
  are exactly the served prompt's tokens, and its trained tokens are the tokenization of the text after that
  prompt through <|im_end|>, alone;
- any other trained reply (a history turn the template renders without its think block) is the text after its
  '<|im_start|>assistant\\n' header through <|im_end|>;
- nothing else is trained, the ids decode to the rendered text, and a cutoff keeps a prefix.
Before this rule, Thinking-2507 trained '<think>' as the first reply token after a prompt that already ends with
'<think>\\n', and its prompt side was not a token prefix of the served prompt (the '\\n\\n' token): this test fails
there.
"""

import copy

import pytest

from qwen_sft.assets import qwen3_tokenizer_dir
from qwen_sft.data.encode import IGNORE_INDEX, EncodeOptions, encode
from qwen_sft.data.formats import Conversation, parse_row
from tests.unit.test_encode import trained_runs
from tests.unit.test_mask_oracle import CASES, random_rows

HEADER, END = "<|im_start|>assistant\n", "<|im_end|>"
COMBOS = [("hybrid", False), ("hybrid", True), ("instruct-2507", False), ("thinking-2507", True)]


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return {v: AutoTokenizer.from_pretrained(qwen3_tokenizer_dir(v)) for v in ("hybrid", "instruct-2507", "thinking-2507")}


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


def expected(conv, tok, thinking, train_on):
    """(rendered text, [(served prompt or None, reply text)] of the trained replies), by the rule alone."""
    msgs = _messages(conv, thinking)
    text = tok.apply_chat_template(msgs, tools=conv.tools, tokenize=False, enable_thinking=thinking)
    heads, pos = [], 0
    while (h := text.find(HEADER, pos)) != -1:
        heads.append(h + len(HEADER))
        pos = h + 1
    index = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    assert len(heads) == len(index)
    last_prompt = tok.apply_chat_template(msgs[:-1], tools=conv.tools, tokenize=False, add_generation_prompt=True,
                                          enable_thinking=thinking)
    assert text.startswith(last_prompt), "the rendering does not start with the last reply's served prompt"
    replies = []
    for n, (i, body) in enumerate(zip(index, heads)):
        if (train_on == "last" and n != len(index) - 1) or conv.messages[i].get("weight", 1) == 0:
            continue
        prompt = tok.apply_chat_template(msgs[:i], tools=conv.tools, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=thinking) if i else None
        end = text.index(END, body) + len(END)
        served = prompt is not None and text.startswith(prompt) and body <= len(prompt) < end
        start = len(prompt) if served else body
        replies.append((prompt if served else None, text[start:end]))
    return text, replies


def problems(conv, tok, thinking, train_on):
    text, replies = expected(conv, tok, thinking, train_on)
    e = encode(conv, tok, EncodeOptions(cutoff_len=1 << 20, enable_thinking=thinking, train_on=train_on))
    found = []
    if tok.decode(e.input_ids) != text:
        found.append("the ids do not decode to the rendered text")
    got = trained_runs(e)
    # Adjacent trained replies cannot merge into one run: a header always separates them.
    if len(got) != len(replies):
        return found + [f"{len(got)} trained runs for {len(replies)} trained replies"]
    for (a, b), (prompt, reply) in zip(got, replies):
        if e.labels[a:b] != e.input_ids[a:b]:
            found.append("a label differs from its input id")
        if e.input_ids[a:b] != tok(reply, add_special_tokens=False).input_ids:
            found.append(f"trained tokens are not the reply {reply[:30]!r} tokenized alone")
        if prompt is not None and e.input_ids[:a] != tok(prompt, add_special_tokens=False).input_ids:
            found.append(f"the ids before reply {reply[:30]!r} are not its served prompt's")
    if not found:
        for cut in (len(e.input_ids) - 1, got[-1][0] + 1, got[0][0]):
            c = encode(conv, tok, EncodeOptions(cutoff_len=cut, enable_thinking=thinking, train_on=train_on))
            if (c.input_ids, c.labels) != (e.input_ids[:cut], e.labels[:cut]) or not c.truncated:
                found.append(f"cutoff_len={cut} does not keep a prefix")
    return found


@pytest.mark.parametrize("variant,thinking", COMBOS, ids=[f"{v}-{'think' if t else 'plain'}" for v, t in COMBOS])
def test_served_prompt_rule_on_generated_rows(tokenizers, variant, thinking):
    tok = tokenizers[variant]
    convs = random_rows(60, seed=2026) + [parse_row(row, None) for row in CASES.values()]
    bad = [f"{c.source or i} {train_on}: {p} :: {c.messages!r}" for i, c in enumerate(convs)
           for train_on in ("all", "last") for p in problems(c, tok, thinking, train_on)]
    assert bad == []


@pytest.mark.parametrize("variant,thinking", COMBOS, ids=[f"{v}-{'think' if t else 'plain'}" for v, t in COMBOS])
def test_weight_zero_turns_are_context(tokenizers, variant, thinking):
    conv = Conversation([{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "weight": 0},
                         {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}])
    assert problems(conv, tokenizers[variant], thinking, "all") == []
    e = encode(conv, tokenizers[variant], EncodeOptions(enable_thinking=thinking))
    assert len(trained_runs(e)) == 1


def test_weight_read_from_a_row_reaches_the_mask(tokenizers):
    row = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "weight": 0},
                        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "weight": 1}]}
    tok = tokenizers["hybrid"]
    e = encode(parse_row(row, None), tok, EncodeOptions())
    assert tok.decode([t for t, lab in zip(e.input_ids, e.labels) if lab != IGNORE_INDEX]) == "A2<|im_end|>"


def test_thinking_2507_plain_qa_is_trained_after_the_open_think_block(tokenizers):
    """The issue's case: ordinary Q/A rows on Thinking-2507. The prompt side ends with '<think>\\n' (token 198,
    as served); the model learns to write '\\n</think>\\n\\n' and the answer."""
    tok = tokenizers["thinking-2507"]
    e = encode(parse_row({"instruction": "Hi", "output": "Hello"}, None), tok, EncodeOptions(enable_thinking=True))
    (a, b), = trained_runs(e)
    assert tok.decode(e.input_ids[:a]).endswith("<|im_start|>assistant\n<think>\n")
    assert e.input_ids[a - 2:a] == tok("<think>\n", add_special_tokens=False).input_ids
    assert tok.decode(e.input_ids[a:b]) == "\n</think>\n\nHello<|im_end|>"
    assert not e.thinking
