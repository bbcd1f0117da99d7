"""The model passes of an eval: greedy generations (through generate.generate_reply), held-out loss over the
trained tokens (each row encoded with our encoder in the model's thinking mode, summed CausalLMLoss / trained-token
count), a tuned model and its base one after the other (evaluate_model), and log_sample_generations, which the
trainer calls at each evaluation to log a few greedy generations to TensorBoard as text."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch

from ..data.encode import EncodeOptions, encode, template_messages
from ..data.formats import Conversation, prompt_text, reference_text
from ..data.template import served_options, served_thinking, template_rules
from ..errors import UserError
from ..runfiles import adapter_base_model, is_adapter_dir, read_run_meta
from .metrics import Generation, LossResult
from .report import EvalReport, ModelEval, fenced, score

log = logging.getLogger("qwen_sft")

DEFAULT_MAX_NEW_TOKENS = 512

def generate_greedy(model, tok, conv: Conversation, enable_thinking: bool, max_new_tokens: int,
                    options: dict | None = None) -> Generation:
    """Greedy reply to the row's prompt (the conversation minus its last reply, tools included, as training renders
    it: encode.template_messages), by generate.generate_reply: its text starts with the think block's opener
    where the prompt opened one (so that a reply cut before '</think>' is all reasoning, as it is), and it has
    stopped when it ends with one of the model's stop tokens. options: the template's other variables."""
    from ..generate import generate_reply

    messages, _ = template_messages(conv.messages[:-1], enable_thinking)
    reply = generate_reply(model, tok, messages, max_new_tokens, enable_thinking, greedy=True, options=options,
                           tools=conv.tools)
    return Generation(reply.text, reply.token_ids, reply.stopped)


def heldout_loss(model, tok, conversations: list[Conversation], enable_thinking: bool,
                 cutoff_len: int = 4096, train_on: str = "all", options: dict | None = None) -> LossResult:
    """Summed CausalLMLoss over the trained tokens of each row (encoded as training encodes it)."""
    from ..batching import collate_padding_free, num_targets
    from ..loss import CausalLMLoss

    module = CausalLMLoss(model)
    device = next(model.parameters()).device
    opts = EncodeOptions(cutoff_len=cutoff_len, enable_thinking=enable_thinking, train_on=train_on, **(options or {}))
    res = LossResult()
    with torch.no_grad():
        for conv in conversations:
            first = encode(conv, tok, opts)
            res.rows += 1
            res.truncated += int(any(e.truncated for e in [first] + first.more))
            for enc in [first] + first.more:  # a row's sequences (data/encode.py), as training sees them
                n = num_targets(enc)
                if not n:
                    continue
                batch = {k: v.to(device) for k, v in collate_padding_free([enc]).items()}
                res.total += float(module(**batch))
                res.tokens += n
    return res



# ---------------------------------------------------------------- running it


def _base_of(model: str, meta: dict) -> str | None:
    if is_adapter_dir(model):
        return adapter_base_model(model)
    return meta.get("base_model")


def evaluate_model(model: str | Path, conversations: list[Conversation], *, base: str | None = None,
                   enable_thinking: bool | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   device: str | torch.device | None = None, data: list[str] | None = None,
                   rows_in_data: int | None = None) -> EvalReport:
    """Loss, greedy generations, metrics and rates for the tuned model and its base.

    model: an adapter or merged directory (or any causal LM). base: None uses the adapter's base (run as
    the adapter model with the adapter disabled: one load) or qwen_sft.json's base_model for a merged
    model. enable_thinking: None uses qwen_sft.json's, else the chat template's default (on for Thinking-2507).
    Models are evaluated one after the other so that only one is in memory (except the adapter case, which shares
    the base weights).
    """
    from ..generate import load_for_chat
    from ..model import load_causal_lm

    model = str(model)
    meta = read_run_meta(model)
    cutoff_len, train_on = int(meta.get("cutoff_len") or 4096), meta.get("train_on") or "all"
    is_adapter = is_adapter_dir(model)
    base_path = base or _base_of(model, meta)
    if not base_path:
        raise UserError(f"{model}: cannot tell the base model (no qwen_sft.json base_model); pass --base")
    shared_base = is_adapter and (base is None or _same_model(base, _base_of(model, meta)))

    def run(m, tok, role: str, path: str) -> ModelEval:
        log.info("eval: %s model: loss over %d rows, %d greedy generations", role, len(conversations),
                 len(conversations))
        loss = heldout_loss(m, tok, conversations, mode, cutoff_len, train_on, options)
        gens = [generate_greedy(m, tok, c, mode, max_new_tokens, options) for c in conversations]
        return score(role, path, loss, gens, conversations, mode)

    tuned_model, tok, trained_mode = load_for_chat(model, device=device)
    mode = trained_mode if enable_thinking is None else served_thinking(tok, meta, enable_thinking, model)
    options = served_options(tok, meta, mode, model)
    tuned = run(tuned_model, tok, "tuned", model)
    if shared_base:
        with tuned_model.disable_adapter():
            base_eval = run(tuned_model, tok, "base", base_path)
    else:
        dev, dtype = next(tuned_model.parameters()).device, next(tuned_model.parameters()).dtype
        del tuned_model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        base_model = load_causal_lm(base_path, dtype).to(dev).eval()
        # The tuned model's tokenizer renders both prompts: same prompt ids for both (the vocabulary is the
        # base's), and a base directory need not ship a chat template.
        base_eval = run(base_model, tok, "base", base_path)
        del base_model
    gc.collect()
    return EvalReport(model, list(data or []), list(conversations), mode, max_new_tokens, tuned, base_eval,
                      rows_in_data=rows_in_data if rows_in_data is not None else len(conversations),
                      template_kind=template_rules(tok).kind)


def _same_model(a: str, b: str | None) -> bool:
    if b is None:
        return False
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


# ---------------------------------------------------------------- training hook


def _unwrap(model):
    from ..loss import CausalLMLoss

    for _ in range(3):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        if isinstance(model, CausalLMLoss):
            model = model.model
    return model


def _as_conversation(item) -> Conversation:
    if isinstance(item, Conversation):
        return item
    messages = list(item)
    if messages and messages[-1]["role"] != "assistant":  # a prompt without a reference
        messages.append({"role": "assistant", "content": ""})
    return Conversation(messages)


def log_sample_generations(model, tokenizer, conversations, writer, step: int, enable_thinking: bool = False,
                           max_new_tokens: int = 128, tag: str = "eval/samples",
                           options: dict | None = None) -> list[Generation]:
    """Greedy replies to a few rows' prompts, logged to TensorBoard as one Markdown text entry at `step`.

    model: the PEFT model (or CausalLMLoss / DDP around it); it is put in eval mode for the generation and
    back in train mode after when it was training. conversations: Conversation rows (or message lists);
    each prompt is the row minus its last assistant reply, which is shown as the reference. writer: a
    torch.utils.tensorboard SummaryWriter (anything with add_text). Call it on one process, with the
    model's parameters whole on it (not sharded by FSDP / ZeRO-3). Returns the generations.
    """
    m = _unwrap(model)
    convs = [_as_conversation(c) for c in conversations]
    was_training = m.training
    m.eval()
    try:
        gens = [generate_greedy(m, tokenizer, c, enable_thinking, max_new_tokens, options) for c in convs]
    finally:
        if was_training:
            m.train()
    parts = [f"step {step}, enable_thinking={enable_thinking}, greedy, at most {max_new_tokens} new tokens"]
    for i, (c, g) in enumerate(zip(convs, gens), 1):
        status = "stopped" if g.stopped else f"cut at {len(g.token_ids)} tokens"
        parts += [f"### sample {i}" + (f" ({c.source})" if c.source else ""), "**prompt**", fenced(prompt_text(c))]
        if reference_text(c):
            parts += ["**reference**", fenced(reference_text(c))]
        parts += [f"**generated** ({status})", fenced(g.text)]
    writer.add_text(tag, "\n\n".join(parts), step)
    return gens
