"""Template fidelity: the tokens our encoder trains on agree with what a plain `AutoTokenizer` from the model
directory renders at inference (check_template_fidelity). `qwen-sft eval` runs it before any model is loaded
(docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..runfiles import read_run_meta, tokenizer_dir
from .encode import IGNORE_INDEX, EncodeOptions, encode, template_messages
from .formats import Conversation, prompt_text
from .template import served_options, served_thinking, template_kwargs, template_rules
from .tokenizer import load_tokenizer

IM_END = "<|im_end|>"

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
    problems = []
    meta = read_run_meta(model_dir)
    stored = meta.get("enable_thinking")
    if enable_thinking is not None and stored is not None and bool(stored) != bool(enable_thinking):
        problems.append(f"the model was trained with enable_thinking={bool(stored)} "
                        f"({Path(model_dir) / 'qwen_sft.json'}) "
                        f"but the rows are checked in enable_thinking={bool(enable_thinking)}: it would be "
                        f"served a prompt it was not trained on")
    src = tokenizer_dir(model_dir)
    problems += _template_copies_differ(Path(src))
    tok = load_tokenizer(str(src), require_chat_template=False)  # what AutoTokenizer reads there, parsed once
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
