"""What a chat template does, read off the template itself: its kind, turn header, turn end, generation prompts.

Qwen3 chat checkpoints share the tokenizer and architecture but not the template:
- hybrid (Qwen/Qwen3-0.6B ... 32B): honours `enable_thinking`; with it off, the generation prompt ends with an
  empty think block;
- instruct (Qwen3-*-Instruct-2507): never thinks; no think block, reasoning_content ignored;
- thinking (Qwen3-*-Thinking-2507): always thinks; its generation prompt already opens the think block.
Everything here is found by rendering small probe conversations and comparing the texts, never by matching
one template's strings, so that a template nobody listed gets the same rules or a clear refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

KINDS = {
    "hybrid": "hybrid (thinking per request with enable_thinking; Qwen/Qwen3-* original)",
    "instruct": "never-thinking (Instruct-2507 kind: no think block, reasoning ignored)",
    "thinking": "always-thinking (Thinking-2507 kind: every served prompt opens a think block)",
}
# Probe texts: plain words that no template adds by itself.
_Q, _A, _R, _Q2 = "probe question one", "probe answer one", "probe reasoning one", "probe question two"


class TemplateError(UserError):
    """The chat template does not have the shape the loss mask needs."""


@dataclass(frozen=True)
class TemplateRules:
    kind: str  # hybrid | instruct | thinking
    header: str  # the text that opens every assistant turn ('<|im_start|>assistant\n')
    end: str  # the special token that closes an assistant turn ('<|im_end|>')
    prompt_thinking: str  # the generation prompt with enable_thinking=True
    prompt_plain: str  # ... with enable_thinking=False

    @property
    def modes(self) -> tuple[bool, ...]:
        """The thinking modes a server can build a prompt for."""
        return {"hybrid": (False, True), "instruct": (False,), "thinking": (True,)}[self.kind]

    @property
    def default_thinking(self) -> bool:
        """enable_thinking: auto. The only mode of a single-mode model; off for hybrid, as before 'auto' existed
        (a choice: most SFT data holds answers without reasoning; the hybrid template itself thinks unless told
        not to, which is why a hybrid model trained this way is served with enable_thinking=False)."""
        return self.kind == "thinking"

    def generation_prompt(self, thinking: bool) -> str:
        return self.prompt_thinking if thinking else self.prompt_plain

    def describe(self) -> str:
        return KINDS[self.kind]

    def opened_think(self, thinking: bool) -> str:
        """The open think block the generation prompt ends with ('<think>\\n' for Thinking-2507: the reply
        starts inside it), else ''. Prepended to generated text so that its reasoning reads as a think block."""
        tail = self.generation_prompt(thinking)[len(self.header):]
        return tail if "<think>" in tail and "</think>" not in tail else ""


def render_text(tok, messages: list[dict], generation: bool, thinking: bool, tools=None) -> str:
    """The chat template's text for messages (and tools), with or without the generation prompt."""
    return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation,
                                   enable_thinking=thinking)


def _special_tokens(tok) -> set[str]:
    found = set(tok.all_special_tokens)
    found.update(t.content for t in tok.added_tokens_decoder.values() if t.special)
    return found


def _detect(tok, name: str) -> TemplateRules:
    def refuse(why: str) -> TemplateError:
        return TemplateError(f"{name}: the chat template {why}; qwen-sft cannot tell where replies start and end "
                             "(use a Qwen3 chat model's tokenizer, or its template)")

    user = [{"role": "user", "content": _Q}]
    base = render_text(tok, user, False, False)
    prompts = {}
    for thinking in (True, False):
        text = render_text(tok, user, True, thinking)
        if not text.startswith(base) or text == base:
            raise refuse("writes no generation prompt after the conversation (add_generation_prompt)")
        prompts[thinking] = text[len(base):]
    # An earlier assistant turn, between two user turns: the part before its content is the header, and its
    # content is followed directly by the special token that closes the turn.
    turn = render_text(tok, user + [{"role": "assistant", "content": _A, "reasoning_content": ""},
                                {"role": "user", "content": _Q2}], False, False)
    i = turn.find(_A, len(base))
    if not turn.startswith(base) or i <= len(base):
        raise refuse("does not render an assistant turn after the user turn before it")
    header, after = turn[len(base):i], turn[i + len(_A):]
    end = next((t for t in sorted(_special_tokens(tok), key=len, reverse=True) if after.startswith(t)), None)
    if end is None:
        raise refuse(f"does not close an assistant turn with a special token (after the reply: {after[:20]!r})")
    if not all(p.startswith(header) for p in prompts.values()):
        raise refuse(f"writes a generation prompt that does not open an assistant turn like its replies ({header!r})")
    if prompts[True] != prompts[False]:
        kind = "hybrid"
    else:
        shown = render_text(tok, user + [{"role": "assistant", "content": _A, "reasoning_content": _R}], False, True)
        kind = "thinking" if _R in shown else "instruct"
    return TemplateRules(kind, header, end, prompts[True], prompts[False])


_CACHE: dict[str, TemplateRules] = {}


def template_rules(tok, name: str = "") -> TemplateRules:
    """The rules of tok's chat template (cached per template text)."""
    template = tok.chat_template
    if not isinstance(template, str) or not template:
        raise TemplateError(f"{name or 'the tokenizer'}: has no chat template; use a Qwen3 chat model or its tokenizer")
    if template not in _CACHE:
        _CACHE[template] = _detect(tok, name or getattr(tok, "name_or_path", "") or "the tokenizer")
    return _CACHE[template]


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


def served_thinking(tok, meta: dict, override: bool | None = None, model: str = "the model") -> bool:
    """The thinking mode a saved model is served in: override (a --enable_thinking flag), else the mode it was
    trained in (qwen_sft.json), else its template's default; refused when its template cannot serve it."""
    setting = override if override is not None else meta.get("enable_thinking", "auto")
    return resolve_thinking(setting, template_rules(tok, model), model)


def served_prompt_ids(tok, messages: list[dict], thinking: bool, tools=None, options: dict | None = None) -> list[int]:
    """Token ids of the prompt a server builds for the reply after messages: the chat template with its generation
    prompt, in thinking mode `thinking`, with the template's other variables (options: {name: value}, such as a
    run's template options; enable_thinking is always `thinking`). Generation (generate.generate_reply) and the
    encoder's check of the served prompt (encode.inference_prompt_ids) use it."""
    enc = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=True, return_dict=True,
                                  **{**(options or {}), "enable_thinking": thinking})
    return list(enc["input_ids"])
