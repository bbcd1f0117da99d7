"""The chat page's model worker: `python -m qwen_sft.ui.chatworker MODEL`, run in the workspace, speaking JSON lines.

It loads MODEL with generate.load_for_chat (a base or merged model directory, a hub id from the local cache, or a
LoRA adapter on its base), writes {"event": "ready", ...} (or {"event": "failed", "message"} and exits 2), then
answers the commands it reads on stdin, one generation at a time:

  {"cmd": "generate", "id", "messages", "enable_thinking": true|false|null, "adapter": true|false,
   "sampling": {"do_sample", "temperature", "top_p", "top_k"}, "max_new_tokens"}
      -> {"event": "text", "id", "text"} as the reply is written, then {"event": "done", "id", "text", "stopped",
         "new_tokens", "cancelled"} or {"event": "error", "id", "message"} (the worker lives on)
  {"cmd": "cancel", "id"}: that generation ends at its next token

Generation is generate.generate_ids (the package's one generation path) with the model's generation_config,
its sampling values set from the command. "adapter": false generates with an adapter's base: the same loaded
model with the adapter disabled (peft's disable_adapter), not a second copy. A prompt that opens a think block
(Thinking-2507) has the opener put before the reply's text, as `qwen-sft chat` does. stdin closed: exit.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import queue

SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")


class Cancelled(Exception):
    pass


class Channel:
    """JSON lines out (one writer at a time), commands in (a reader thread; cancels are noted at once)."""

    def __init__(self):
        self.out = sys.stdout
        self.lock = threading.Lock()
        self.commands: queue.Queue = queue.Queue()
        self.cancelled: set[str] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def emit(self, **event) -> None:
        with self.lock:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()

    def _read(self) -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("cmd") == "cancel":
                self.cancelled.add(str(cmd.get("id")))
            else:
                self.commands.put(cmd)
        self.commands.put(None)  # stdin closed: the UI is gone


def streamer_class():
    from transformers import TextStreamer

    class JsonStreamer(TextStreamer):
        """Text out as it is decoded (whole words and characters, special tokens skipped); stops on cancel."""

        def __init__(self, tok, emit, is_cancelled):
            super().__init__(tok, skip_prompt=True, skip_special_tokens=True)
            self.emit, self.is_cancelled, self.text = emit, is_cancelled, ""

        def put(self, value):
            if self.is_cancelled():
                raise Cancelled
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                self.text += text
                self.emit(text)

    return JsonStreamer


def generate(chat, channel: Channel, cmd: dict, options: dict | None = None) -> None:
    """options: the model's template options (data/template.py served_options)."""
    from ..data.template import resolve_thinking, template_kwargs, template_rules
    from ..errors import UserError
    from ..generate import generate_ids, stop_token_ids

    model, tok, trained_mode = chat
    rid = str(cmd["id"])
    setting = cmd.get("enable_thinking")
    try:
        rules = template_rules(tok)
        mode = trained_mode if setting is None else resolve_thinking(setting, rules, cmd.get("model_name", "the model"))
    except UserError as e:
        return channel.emit(event="error", id=rid, message=str(e))
    enc = tok.apply_chat_template(cmd["messages"], add_generation_prompt=True, **template_kwargs(mode, options),
                                  return_dict=True, return_tensors="pt")
    opener = rules.opened_think(mode)
    emit = lambda text: channel.emit(event="text", id=rid, text=text)  # noqa: E731
    streamer = streamer_class()(tok, emit, lambda: rid in channel.cancelled)
    if opener:
        emit(opener)
    sampling = cmd.get("sampling") or {}
    config = model.generation_config
    saved = {k: getattr(config, k, None) for k in SAMPLING_KEYS}
    use_adapter = cmd.get("adapter", True)
    off = model.disable_adapter() if not use_adapter and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    cancelled, new = False, []
    try:
        for k in SAMPLING_KEYS:
            if sampling.get(k) is not None:
                setattr(config, k, sampling[k])
        with off:
            new = generate_ids(model, tok, enc["input_ids"], int(cmd.get("max_new_tokens") or 512),
                               greedy=not config.do_sample, streamer=streamer)
    except Cancelled:
        cancelled = True
    finally:
        for k, v in saved.items():
            setattr(config, k, v)
        channel.cancelled.discard(rid)
    text = opener + (tok.decode(new, skip_special_tokens=True) if new else streamer.text)
    channel.emit(event="done", id=rid, text=text, stopped=bool(new) and new[-1] in stop_token_ids(tok),
                 new_tokens=len(new), cancelled=cancelled)


def main(argv: list[str] | None = None) -> int:
    import logging

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="qwen-sft chat worker: %(message)s", stream=sys.stderr)
    channel = Channel()
    path = argv[0]
    try:
        from ..data.template import served_options, template_rules
        from ..errors import UserError
        from ..generate import load_for_chat
        from ..model import is_adapter_dir, read_run_meta

        chat = load_for_chat(path)
        options = served_options(chat.tokenizer, read_run_meta(path), chat.enable_thinking, path)
    except UserError as e:
        channel.emit(event="failed", message=str(e))
        return 2
    model, tok, mode = chat
    rules = template_rules(tok, path)
    gen = model.generation_config
    channel.emit(event="ready", model=path, adapter=is_adapter_dir(path), enable_thinking=mode, modes=list(rules.modes),
                 template_kind=rules.kind, sampling={k: getattr(gen, k, None) for k in SAMPLING_KEYS},
                 device=str(next(model.parameters()).device), dtype=str(next(model.parameters()).dtype).replace("torch.", ""))
    while True:
        cmd = channel.commands.get()
        if cmd is None:
            return 0
        if cmd.get("cmd") != "generate":
            continue
        try:
            generate(chat, channel, cmd, options)
        except Exception as e:  # noqa: BLE001 - one bad generation must not end the worker; the page shows why
            first = (str(e).strip().splitlines() or [""])[0]
            channel.emit(event="error", id=str(cmd.get("id")), message=f"generation failed: {type(e).__name__}: {first}")
            channel.cancelled.discard(str(cmd.get("id")))


if __name__ == "__main__":
    sys.exit(main())
