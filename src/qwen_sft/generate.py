"""Chat with a merged model or with base + adapter: one-shot (--prompt) or an interactive loop; and the package's
one generation function, generate_reply, which chat, the UI's chat worker, eval and merge --validate all call.

generate_reply renders the served prompt (data/template.served_prompt_ids: the chat template with its generation
prompt, in the thinking mode the model is served in, with the template's other options), decodes with the
model's generation_config and this request's sampling (a copy: the model's own is never changed, so two requests
never see each other's settings), streams the text as it is written, and stops by one rule (stop_ids): the
model's own eos list (generation_config.eos_token_id) and its tokenizer's eos token, which is what a server such
as vLLM stops at. For Qwen3 that is <|im_end|> and <|endoftext|>.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from .data.template import resolve_thinking, served_options, served_prompt_ids, served_thinking, template_rules
from .errors import UserError

log = logging.getLogger("qwen_sft")
IM_END, END_OF_TEXT = "<|im_end|>", "<|endoftext|>"
# The sampling settings a request may set (None: the model's generation_config value).
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")


class ChatModel(NamedTuple):
    model: object
    tokenizer: object
    enable_thinking: bool


@dataclass
class Reply:
    written: str  # the opener of a think block the prompt opened (Thinking-2507), then the decoded reply: as streamed
    token_ids: list[int]  # the generated ids, stop token included
    stopped: bool  # ended with a stop token (stop_ids), not cut by max_new_tokens or cancelled
    cancelled: bool = False  # ended early because `cancelled()` said so

    @property
    def text(self) -> str:
        """The reply without the white space around it."""
        return self.written.strip()


def load_for_chat(path: str | Path, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> ChatModel:
    """(model, tokenizer, enable_thinking) for a merged model directory (or any causal LM) or an adapter
    directory (its base from adapter_config.json, the adapter applied unmerged).

    dtype: None picks bfloat16 on a CUDA GPU that supports it, float32 otherwise (bf16 is slow on most CPUs).
    enable_thinking: the mode the model was trained with (qwen_sft.json), else its chat template's default
    (data/template.py: on for Thinking-2507, off otherwise).
    """
    from .model import load_causal_lm, load_peft, pick_device
    from .data.tokenizer import load_tokenizer
    from .runfiles import adapter_base_model, is_adapter_dir, read_run_meta, tokenizer_dir

    p = Path(path)
    device = torch.device(device) if device is not None else pick_device()
    if dtype is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float32
    meta = read_run_meta(p)
    if is_adapter_dir(p):
        base_model = adapter_base_model(p)
        tok = load_tokenizer(tokenizer_dir(p, base_model))
        model = load_peft(load_causal_lm(base_model, dtype), p)
        log.info("chat: %s on base %s (%s, %s)", p, base_model, str(dtype).replace("torch.", ""), device)
    else:
        tok = load_tokenizer(str(path))
        model = load_causal_lm(str(path), dtype)  # safetensors only, no remote code
        log.info("chat: %s (%s, %s)", path, str(dtype).replace("torch.", ""), device)
    model.to(device).eval()
    return ChatModel(model, tok, served_thinking(tok, meta, None, str(path)))


def stop_token_ids(tok) -> list[int]:
    """[<|im_end|>, <|endoftext|>] ids from the tokenizer (151645, 151643 for Qwen3): what merge writes into a
    merged model's generation_config.json as its eos list."""
    ids = []
    for t in (IM_END, END_OF_TEXT):
        i = tok.convert_tokens_to_ids(t)
        if i is None or i == tok.unk_token_id or not isinstance(i, int):
            raise UserError(f"the tokenizer has no {t} token: not a Qwen3 chat tokenizer")
        ids.append(i)
    return ids


def stop_ids(model, tok) -> list[int]:
    """The one stop rule: the model's eos list (generation_config.eos_token_id, an id or a list), then the
    tokenizer's eos token when the list lacks it (a server stops at both)."""
    eos = model.generation_config.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    if not ids:
        raise UserError("the model names no eos token (generation_config.json eos_token_id) and its tokenizer none "
                        "either: generation would never stop")
    return ids


def make_greedy(gen):
    """Greedy decoding; sampling knobs back at their neutral defaults (transformers warns about others)."""
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.min_p = False, 1.0, 1.0, 50, None
    return gen


def generation_config(model, tok, max_new_tokens: int, greedy: bool = False, sampling: dict | None = None):
    """A copy of the model's generation_config for one request: its token budget, the stop rule (stop_ids), and
    sampling: greedy, or the request's values for SAMPLING_KEYS (None: the model's own)."""
    gen = copy.deepcopy(model.generation_config)
    gen.max_new_tokens, gen.max_length = max_new_tokens, None
    gen.eos_token_id = stop_ids(model, tok)
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gen.eos_token_id[0]
    for k, v in (sampling or {}).items():
        if k not in SAMPLING_KEYS:
            raise UserError(f"sampling: {k!r} is not one of {', '.join(SAMPLING_KEYS)}")
        if v is not None:
            setattr(gen, k, v)
    return make_greedy(gen) if greedy or not gen.do_sample else gen


def _streamer(tok, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        """The reply's text as it is decoded (whole words and characters, special tokens skipped), to on_text."""

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                on_text(text)

    return Streamer(tok, skip_prompt=True, skip_special_tokens=True)


def _cancel_criteria(cancelled: Callable[[], bool]):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancel(StoppingCriteria):
        """Ends the generation at its next token once cancelled() is true (what was written so far is kept)."""

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancelled(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Cancel()])


def generate_reply(model, tok, messages: list[dict], max_new_tokens: int = 512, enable_thinking: bool = False,
                   stream: bool = False, greedy: bool = False, options: dict | None = None, *,
                   sampling: dict | None = None, tools=None, on_text: Callable[[str], None] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> Reply:
    """The assistant's reply to messages, as a server would give it (module doc).

    messages (and tools) go to the chat template as given, with the generation prompt, enable_thinking and
    options (the template's other variables, such as a run's template options: {name: value}). greedy, else the
    model's sampling with this request's `sampling` values. on_text: called with each piece of text as it is
    written, the think block's opener first when the prompt opened one; stream: print the pieces to stdout.
    cancelled: polled at every token."""
    if stream and on_text is None:
        on_text = lambda text: print(text, end="", flush=True)  # noqa: E731
    ids = served_prompt_ids(tok, messages, enable_thinking, tools, options)
    # A prompt that ends inside an open think block (Thinking-2507): the reply's text starts with that opener,
    # so that its reasoning reads (and splits) as a think block.
    opener = template_rules(tok).opened_think(enable_thinking)
    if opener and on_text is not None:
        on_text(opener)
    gen = generation_config(model, tok, max_new_tokens, greedy, sampling)
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=gen,
                             streamer=_streamer(tok, on_text) if on_text is not None else None,
                             stopping_criteria=_cancel_criteria(cancelled) if cancelled is not None else None)
    if stream:
        print(flush=True)  # the line the reply was printed on ends
    new = out[0, prompt.shape[1]:].tolist()
    stopped = bool(new) and new[-1] in gen.eos_token_id
    return Reply(opener + tok.decode(new, skip_special_tokens=True), new, stopped,
                 cancelled=not stopped and cancelled is not None and cancelled())


def chat_once(model, tok, messages: list[dict], max_new_tokens: int = 512, enable_thinking: bool = False,
              stream: bool = True, greedy: bool = False, options: dict | None = None) -> str:
    """One assistant reply to messages; streamed to stdout as it is generated when stream. Returns its text."""
    return generate_reply(model, tok, messages, max_new_tokens, enable_thinking, stream, greedy, options).text


def add_chat_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", metavar="MODEL_OR_ADAPTER",
                        help="a merged model directory (or hub id), or a LoRA adapter directory")
    parser.add_argument("--prompt", help="answer this one prompt and exit (default: interactive chat)")
    parser.add_argument("--system", help="system message")
    parser.add_argument("--max_new_tokens", type=int, default=1024, help="token budget per reply")
    parser.add_argument("--enable_thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="Qwen3 thinking mode (default: as the model was trained, from qwen_sft.json; without "
                             "it, the chat template's own: on for Thinking-2507, off otherwise)")
    parser.add_argument("--greedy", action="store_true",
                        help="greedy decoding instead of the generation_config sampling")
    return parser


def run_chat(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    model, tok, trained_thinking = load_for_chat(args.model)
    thinking = trained_thinking if args.enable_thinking is None else \
        resolve_thinking(args.enable_thinking, template_rules(tok), args.model)
    from .runfiles import read_run_meta

    options = served_options(tok, read_run_meta(Path(args.model)), thinking, args.model)
    history = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        chat_once(model, tok, history + [{"role": "user", "content": args.prompt}], args.max_new_tokens, thinking,
                  stream=True, greedy=args.greedy, options=options)
        return 0
    print(f"chatting with {args.model} (enable_thinking={thinking}); 'exit' or Ctrl-D quits, '/clear' forgets "
          f"the conversation", file=sys.stderr, flush=True)
    system = list(history)
    while True:
        try:
            line = input("user> ")
        except EOFError:
            print()
            return 0
        text = line.strip()
        if text in ("exit", "quit"):
            return 0
        if not text:
            continue
        if text == "/clear":
            history = list(system)
            continue
        history.append({"role": "user", "content": line})
        print("assistant> ", end="", flush=True)
        reply = generate_reply(model, tok, history, args.max_new_tokens, thinking, stream=True, greedy=args.greedy,
                               options=options)
        if not reply.stopped:
            print(f"[cut at --max_new_tokens {args.max_new_tokens}]", file=sys.stderr, flush=True)
        history.append({"role": "assistant", "content": reply.text})
