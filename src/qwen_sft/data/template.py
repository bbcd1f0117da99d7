"""What a chat template does, read off the template itself: its kind, turn header, turn end, generation prompts.

Qwen3 chat checkpoints share the tokenizer and architecture but not the template:
- hybrid (Qwen/Qwen3-0.6B ... 32B): honours `enable_thinking`; with it off, the generation prompt ends with an
  empty think block;
- instruct (Qwen3-*-Instruct-2507): never thinks; no think block, reasoning_content ignored;
- thinking (Qwen3-*-Thinking-2507): always thinks; its generation prompt already opens the think block.
Qwen3.5 / 3.6 / 3.8 templates are hybrid too, and differ in their own default (enable_thinking not given):
the 4B and larger ones open a think block (`<think>\n`), the 0.8B and 2B ones close an empty one.
Everything here is found by rendering small probe conversations and comparing the texts, never by matching
one template's strings, so that a template nobody listed gets the same rules or a clear refusal.

The options a run passes to the template besides enable_thinking (TEMPLATE_OPTIONS: Qwen3.6's
preserve_thinking, Qwen3.8's reasoning_effort) go through template_kwargs(), the one place that turns a
run's settings into apply_chat_template's keyword arguments; every rendering (training, chat, eval,
merge --validate) calls it. What a template accepts is read off the template: the variables its source
reads (jinja2.meta), and a probe render with the value (a template that raises on a value refuses it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UserError

KINDS = {
    "hybrid": "hybrid (thinking per request with enable_thinking; Qwen/Qwen3-* original)",
    "instruct": "never-thinking (Instruct-2507 kind: no think block, reasoning ignored)",
    "thinking": "always-thinking (Thinking-2507 kind: every served prompt opens a think block)",
}
# Probe texts: plain words that no template adds by itself.
_Q, _A, _R, _Q2 = "probe question one", "probe answer one", "probe reasoning one", "probe question two"
_TOOL, _ARG, _VALUE = "probe_tool_name", "probe_argument", "probe value one"
# Run settings passed to the chat template under their own name when set (None: not passed, the template's own
# default). A setting the template does not read is refused (check_options).
TEMPLATE_OPTIONS = ("preserve_thinking", "reasoning_effort")


def template_options(source) -> dict:
    """The TEMPLATE_OPTIONS that are set in `source` (a TrainConfig, EncodeOptions, or a saved model's
    qwen_sft.json dict): {name: value}."""
    get = source.get if isinstance(source, Mapping) else lambda k: getattr(source, k, None)
    return {k: get(k) for k in TEMPLATE_OPTIONS if get(k) is not None}


def template_kwargs(enable_thinking: bool, options=None) -> dict:
    """apply_chat_template's keyword arguments for a thinking mode and a run's template options (`options`:
    anything template_options reads, or None): the one mapping from settings to template variables."""
    return {"enable_thinking": enable_thinking, **(template_options(options) if options is not None else {})}


class TemplateError(UserError):
    """The chat template does not have the shape the loss mask needs."""


@dataclass(frozen=True)
class TemplateRules:
    kind: str  # hybrid | instruct | thinking
    header: str  # the text that opens every assistant turn ('<|im_start|>assistant\n')
    end: str  # the special token that closes an assistant turn ('<|im_end|>')
    prompt_thinking: str  # the generation prompt with enable_thinking=True
    prompt_plain: str  # ... with enable_thinking=False
    thinks_by_default: bool = False  # the generation prompt without enable_thinking is the thinking one
    options: frozenset = frozenset()  # the TEMPLATE_OPTIONS the template reads
    renders_tools: bool = True  # `tools` appear in the rendered text
    renders_tool_calls: bool = True  # an assistant turn's `tool_calls` appear in the rendered text

    @property
    def modes(self) -> tuple[bool, ...]:
        """The thinking modes a server can build a prompt for."""
        return {"hybrid": (False, True), "instruct": (False,), "thinking": (True,)}[self.kind]

    @property
    def default_thinking(self) -> bool:
        """enable_thinking: auto. The only mode of a single-mode model; for a hybrid one, the template's own default
        where its thinking prompt opens the think block (Qwen3.5 4B and up, 3.6, 3.8: on; 0.8B, 2B: off).
        Qwen3's original hybrid template also thinks unless told not to, but its thinking prompt leaves the
        `<think>` to the model: auto is off there, as before 'auto' existed (a choice: most SFT data holds
        answers without reasoning; a Qwen3 hybrid model trained this way is served with enable_thinking=False)."""
        if self.kind == "hybrid":
            return self.thinks_by_default and bool(self.opened_think(True))
        return self.kind == "thinking"

    def generation_prompt(self, thinking: bool) -> str:
        return self.prompt_thinking if thinking else self.prompt_plain

    def describe(self) -> str:
        if self.kind == "hybrid" and self.opened_think(True):
            return ("hybrid (thinking per request with enable_thinking; thinks by default: Qwen3.5 4B and up, 3.6, 3.8)"
                    if self.thinks_by_default else
                    "hybrid (thinking per request with enable_thinking; does not think by default: Qwen3.5 0.8B, 2B)")
        return KINDS[self.kind]

    def opened_think(self, thinking: bool) -> str:
        """The open think block the generation prompt ends with ('<think>\\n' for Thinking-2507: the reply
        starts inside it), else ''. Prepended to generated text so that its reasoning reads as a think block."""
        tail = self.generation_prompt(thinking)[len(self.header):]
        return tail if "<think>" in tail and "</think>" not in tail else ""


def render_text(tok, messages: list[dict], generation: bool, thinking: bool, tools=None, options=None) -> str:
    """The chat template's text for messages (and tools), with or without the generation prompt; options: the
    run's template options (template_kwargs)."""
    return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation,
                                   **template_kwargs(thinking, options))


def _special_tokens(tok) -> set[str]:
    found = set(tok.all_special_tokens)
    found.update(t.content for t in tok.added_tokens_decoder.values() if t.special)
    return found


def _detect(tok, name: str) -> TemplateRules:
    def refuse(why: str) -> TemplateError:
        return TemplateError(f"{name}: the chat template {why}; qwen-sft cannot tell where replies start and end "
                             "(use a Qwen3 chat model's tokenizer, or its template)")

    user = [{"role": "user", "content": _Q}]
    prompts = {}
    # Each mode against its own rendering without the prompt (Qwen3.8 adds a reasoning-effort system turn in
    # thinking mode); None: enable_thinking not given, the template's own default.
    for thinking in (True, False, None):
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        base = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=False, **kwargs)
        text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True, **kwargs)
        if not text.startswith(base) or text == base:
            raise refuse("writes no generation prompt after the conversation (add_generation_prompt)")
        prompts[thinking] = text[len(base):]
    base = render_text(tok, user, False, False)
    # An earlier assistant turn, between two user turns: the part before its content is the header, and its
    # content is followed directly by the special token that closes the turn.
    turn = render_text(tok, user + [{"role": "assistant", "content": _A, "reasoning_content": ""},
                                {"role": "user", "content": _Q2}], False, False)
    i = turn.find(_A, len(base))
    if not turn.startswith(base) or i <= len(base):
        raise refuse("does not render an assistant turn after the user turn before it")
    header, after = turn[len(base):i], turn[i + len(_A):]
    # A template that keeps a think block on history turns (Qwen3.8) renders it here: the header is what the
    # turn and both generation prompts share, up to a think block.
    header = os.path.commonprefix([header, prompts[True], prompts[False]]).split("<think>")[0]
    end = next((t for t in sorted(_special_tokens(tok), key=len, reverse=True) if after.startswith(t)), None)
    if end is None:
        raise refuse(f"does not close an assistant turn with a special token (after the reply: {after[:20]!r})")
    if not all(prompts[t].startswith(header) for t in (True, False)):
        raise refuse(f"writes a generation prompt that does not open an assistant turn like its replies ({header!r})")
    if prompts[True] != prompts[False]:
        kind = "hybrid"
    else:
        shown = render_text(tok, user + [{"role": "assistant", "content": _A, "reasoning_content": _R}], False, True)
        kind = "thinking" if _R in shown else "instruct"
    return TemplateRules(
        kind,
        header,
        end,
        prompts[True],
        prompts[False],
        thinks_by_default=prompts[None] == prompts[True],
        options=_template_variables(tok.chat_template) & frozenset(TEMPLATE_OPTIONS),
        **_tool_probes(tok, user),
    )


def _template_variables(template: str) -> frozenset:
    """The names a template reads from its context (enable_thinking, tools, preserve_thinking, ...)."""
    import jinja2
    import jinja2.meta

    try:
        return frozenset(jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)))
    except jinja2.TemplateError:  # transformers' own environment parses it; unknown syntax: assume it reads none
        return frozenset()


def _tool_probes(tok, user: list[dict]) -> dict:
    """Whether the template renders `tools` and an assistant turn's `tool_calls` (a custom template may ignore
    them: the tools would vanish from the prompt and a call would be trained as an empty reply)."""
    tool = {
        "type": "function",
        "function": {
            "name": _TOOL,
            "description": _Q2,
            "parameters": {"type": "object", "properties": {_ARG: {"type": "string"}}},
        },
    }
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": _TOOL, "arguments": {_ARG: _VALUE}}}]}
    out = {}
    for key, messages, tools in (("renders_tools", user, [tool]), ("renders_tool_calls", user + [call], None)):
        try:
            out[key] = _TOOL in tok.apply_chat_template(messages, tools=tools, tokenize=False, enable_thinking=False)
        except Exception:  # noqa: BLE001 - a template that fails on tools does not render them
            out[key] = False
    return out


_CACHE: dict[str, TemplateRules] = {}


DIGESTS = "_qwen_sft_digests"  # the tokenizer's attribute that keeps them (made before load_tokenizer's copies)


def tokenizer_digest(tokenizer, name: str, compute) -> str:
    """compute(tokenizer), kept with the tokenizer and the copies tokenizer.load_tokenizer makes of it (hashing
    Qwen's vocabulary takes most of a second). Keyed also by what a caller could change in place (the chat template, the
    special tokens, the vocabulary's size), so a changed tokenizer is hashed again."""
    key = (name, json.dumps([tokenizer.chat_template, tokenizer.special_tokens_map], sort_keys=True, default=str),
           len(tokenizer))
    known = tokenizer.__dict__.setdefault(DIGESTS, {})
    if key not in known:
        known[key] = compute(tokenizer)
    return known[key]


def template_rules(tok, name: str = "") -> TemplateRules:
    """The rules of tok's chat template (cached per template text)."""
    template = tok.chat_template
    if not isinstance(template, str) or not template:
        raise TemplateError(f"{name or 'the tokenizer'}: has no chat template; use a Qwen3 chat model or its tokenizer")
    if template not in _CACHE:
        _CACHE[template] = _detect(tok, name or getattr(tok, "name_or_path", "") or "the tokenizer")
    return _CACHE[template]


def check_options(options, tok, thinking: bool, name: str = "the model") -> dict:
    """The run's template options (template_options of `options`), refused with one line when the chat template
    does not read the option, or fails on its value (a probe render in the run's thinking mode)."""
    found = template_options(options) if options is not None else {}
    rules = template_rules(tok, name)
    for key, value in found.items():
        if key not in rules.options:
            raise UserError(f"{key}: {value!r}, but {name}'s chat template has no {key} option (it would be ignored); "
                            "remove it (Qwen3.6 and 3.8 templates read preserve_thinking, Qwen3.8 reasoning_effort)")
        for mode in dict.fromkeys(
            (thinking, *rules.modes)
        ):  # also where this run's mode ignores it (3.8: thinking off)
            try:
                render_text(tok, [{"role": "user", "content": _Q}], True, mode, None, {key: value})
            except Exception as e:  # noqa: BLE001 - jinja's raise_exception, or a type the template cannot use
                raise UserError(f"{key}: {value!r} is refused by {name}'s chat template: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    return found


def resolve_thinking(setting, rules: TemplateRules, model: str = "the model") -> bool:
    """enable_thinking as trained and served: 'auto' (or None) is the template's default; a mode the model
    cannot be served in is refused, naming the model kind and the fix."""
    if setting in ("auto", None):
        return rules.default_thinking
    if not isinstance(setting, bool):
        raise UserError(f"enable_thinking: {setting!r} is not one of auto, true, false")
    if setting in rules.modes:
        return setting
    if rules.kind == "thinking":
        raise UserError(f"enable_thinking: false, but {model} is {rules.describe()}: it is never served a prompt "
                        "without one. Set enable_thinking: auto (or true), or fine-tune an Instruct-2507 model for "
                        "replies without thinking")
    raise UserError(f"enable_thinking: true, but {model} is {rules.describe()}: it is never served a thinking prompt. "
                    "Set enable_thinking: auto (or false), or fine-tune a Thinking-2507 or hybrid Qwen3 model to "
                    "train reasoning")


def served_options(tok, meta: dict, thinking: bool, model: str = "the model") -> dict:
    """The template options a saved model was trained with (qwen_sft.json), checked against its template: what
    chat, eval and merge --validate pass to template_kwargs."""
    return check_options(meta, tok, thinking, model)


def served_thinking(tok, meta: dict, override: bool | None = None, model: str = "the model") -> bool:
    """The thinking mode a saved model is served in: override (a --enable_thinking flag), else the mode it was
    trained in (qwen_sft.json), else its template's default; refused when its template cannot serve it."""
    setting = override if override is not None else meta.get("enable_thinking", "auto")
    return resolve_thinking(setting, template_rules(tok, model), model)


def served_prompt_ids(tok, messages: list[dict], thinking: bool, tools=None, options=None) -> list[int]:
    """Token ids of the prompt a server builds for the reply after messages: the chat template with its generation
    prompt, in thinking mode `thinking`, with the run's template options (options: anything template_options reads,
    such as served_options' answer; template_kwargs). Generation (generate.generate_reply) and the encoder's check
    of the served prompt (encode.inference_prompt_ids) use it."""
    enc = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=True, return_dict=True,
                                  **template_kwargs(thinking, options))
    return list(enc["input_ids"])
