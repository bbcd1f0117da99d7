"""Chat with a merged model or with base + adapter: one-shot (--prompt) or an interactive loop.

The prompt is rendered with the model's chat template (add_generation_prompt, enable_thinking as the
model was trained: qwen_sft.json, overridable), decoding follows the model's generation_config
(Qwen3's sampling settings) unless --greedy, and generation stops at <|im_end|> or <|endoftext|>.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .data.template import resolve_thinking, served_options, served_thinking, template_kwargs, template_rules
from .errors import UserError

log = logging.getLogger("qwen_sft")
IM_END, END_OF_TEXT = "<|im_end|>", "<|endoftext|>"


class ChatModel(NamedTuple):
    model: object
    tokenizer: object
    enable_thinking: bool


@dataclass
class Reply:
    text: str
    token_ids: list[int]
    stopped: bool  # ended with a stop token (not cut by max_new_tokens)


def load_for_chat(path: str | Path, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> ChatModel:
    """(model, tokenizer, enable_thinking) for a merged model directory (or any causal LM) or an adapter
    directory (its base from adapter_config.json, the adapter applied unmerged).

    dtype: None picks bfloat16 on a CUDA GPU that supports it, float32 otherwise (bf16 is slow on most CPUs).
    enable_thinking: the mode the model was trained with (qwen_sft.json), else its chat template's default
    (data/template.py: on for Thinking-2507, off otherwise).
    """
    from .model import (adapter_base_model, is_adapter_dir, load_causal_lm, load_peft, load_tokenizer, pick_device,
                        read_run_meta, tokenizer_dir)

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
    """[<|im_end|>, <|endoftext|>] ids from the tokenizer (151645, 151643 for Qwen3)."""
    ids = []
    for t in (IM_END, END_OF_TEXT):
        i = tok.convert_tokens_to_ids(t)
        if i is None or i == tok.unk_token_id or not isinstance(i, int):
            raise UserError(f"the tokenizer has no {t} token: not a Qwen3 chat tokenizer")
        ids.append(i)
    return ids


def make_greedy(gen):
    """Greedy decoding; sampling knobs back at their neutral defaults (transformers warns about others)."""
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.min_p = False, 1.0, 1.0, 50, None
    return gen


def _generation_config(model, tok, max_new_tokens: int, greedy: bool):
    gen = copy.deepcopy(model.generation_config)
    gen.max_new_tokens = max_new_tokens
    gen.max_length = None
    stops = stop_token_ids(tok)
    eos = gen.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    gen.eos_token_id = eos + [t for t in stops if t not in eos]
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else stops[1]
    return make_greedy(gen) if greedy else gen


def generate_reply(model, tok, messages: list[dict], max_new_tokens: int = 512, enable_thinking: bool = False,
                   stream: bool = False, greedy: bool = False, options: dict | None = None) -> Reply:
    """Render messages with the chat template, generate, return the reply (text, token ids, stopped).
    options: the model's template options (data/template.py served_options)."""
    from transformers import TextStreamer

    enc = tok.apply_chat_template(messages, add_generation_prompt=True, **template_kwargs(enable_thinking, options),
                                  return_dict=True, return_tensors="pt")
    # A prompt that ends inside an open think block (Thinking-2507): the reply's text starts with that opener,
    # so that its reasoning reads (and splits) as a think block.
    opener = template_rules(tok).opened_think(enable_thinking)
    streamer = None
    if stream:
        print(opener, end="", flush=True)
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    new = generate_ids(model, tok, enc["input_ids"], max_new_tokens, greedy, streamer)
    stopped = bool(new) and new[-1] in stop_token_ids(tok)
    return Reply((opener + tok.decode(new, skip_special_tokens=True)).strip(), new, stopped)


def generate_ids(model, tok, prompt_ids, max_new_tokens: int, greedy: bool = False, streamer=None) -> list[int]:
    """New token ids after prompt_ids ([1, T] tensor or a list), with the model's generation_config
    (greedy: sampling off), stopping at <|im_end|> / <|endoftext|>. The one generation path of the package."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(prompt_ids, device=device).reshape(1, -1)
    gen = _generation_config(model, tok, max_new_tokens, greedy)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen, streamer=streamer)
    return out[0, ids.shape[1]:].tolist()


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
    from .model import read_run_meta

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
