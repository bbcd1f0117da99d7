"""The chat page's model worker: `python -m qwen_sft.ui.chatworker MODEL`, run in the workspace, speaking JSON lines.

It loads MODEL with generate.load_for_chat (a base or merged model directory, a hub id from the local cache, or a
LoRA adapter on its base), writes {"event": "ready", ...} (or {"event": "failed", "message"} and exits 2), then
answers the commands it reads on stdin, one generation at a time:

  {"cmd": "generate", "id", "messages", "enable_thinking": true|false|null, "adapter": true|false,
   "sampling": {"do_sample", "temperature", "top_p", "top_k"}, "max_new_tokens"}
      -> {"event": "text", "id", "text"} as the reply is written, then {"event": "done", "id", "text", "stopped",
         "new_tokens", "cancelled"} or {"event": "error", "id", "message"} (the worker lives on)
  {"cmd": "cancel", "id"}: that generation ends at its next token

Generation is generate.generate_reply (the package's one generation function: the served prompt, the stop rule,
the think block's opener before the reply's text, as `qwen-sft chat`), with the model's generation_config and
the command's sampling values (for this request only). "adapter": false generates with an adapter's base: the
same loaded model with the adapter disabled (peft's disable_adapter), not a second copy. stdin closed: exit.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import queue


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


def generate(chat, channel: Channel, cmd: dict, options: dict | None = None) -> None:
    """options: the template's other variables (generate.generate_reply)."""
    from ..data.template import resolve_thinking, template_rules
    from ..errors import UserError
    from ..generate import SAMPLING_KEYS, generate_reply

    model, tok, trained_mode = chat
    rid = str(cmd["id"])
    setting = cmd.get("enable_thinking")
    try:
        rules = template_rules(tok)
        mode = trained_mode if setting is None else resolve_thinking(setting, rules, cmd.get("model_name", "the model"))
    except UserError as e:
        return channel.emit(event="error", id=rid, message=str(e))
    sampling = {k: v for k, v in (cmd.get("sampling") or {}).items() if k in SAMPLING_KEYS}
    use_adapter = cmd.get("adapter", True)
    off = model.disable_adapter() if not use_adapter and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with off:
            reply = generate_reply(model, tok, cmd["messages"], int(cmd.get("max_new_tokens") or 512), mode,
                                   options=options, sampling=sampling,
                                   on_text=lambda text: channel.emit(event="text", id=rid, text=text),
                                   cancelled=lambda: rid in channel.cancelled)
    finally:
        channel.cancelled.discard(rid)
    channel.emit(event="done", id=rid, text=reply.written, stopped=reply.stopped, new_tokens=len(reply.token_ids),
                 cancelled=reply.cancelled)


def main(argv: list[str] | None = None) -> int:
    import logging

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="qwen-sft chat worker: %(message)s", stream=sys.stderr)
    channel = Channel()
    path = argv[0]
    try:
        from ..data.template import served_options, template_rules
        from ..errors import UserError
        from ..generate import SAMPLING_KEYS, load_for_chat
        from ..runfiles import is_adapter_dir, read_run_meta

        chat = load_for_chat(path)
        options = served_options(chat.tokenizer, read_run_meta(path), chat.enable_thinking, path)
    except UserError as e:
        channel.emit(event="failed", message=str(e))
        return 2
    model, tok, mode = chat
    rules = template_rules(tok, path)
    gen = model.generation_config
    channel.emit(
        event="ready",
        model=path,
        adapter=is_adapter_dir(path),
        enable_thinking=mode,
        modes=list(rules.modes),
        template_kind=rules.kind,
        sampling={k: getattr(gen, k, None) for k in SAMPLING_KEYS},
        device=str(next(model.parameters()).device),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
    )
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
            channel.emit(
                event="error", id=str(cmd.get("id")), message=f"generation failed: {type(e).__name__}: {first}"
            )
            channel.cancelled.discard(str(cmd.get("id")))


if __name__ == "__main__":
    sys.exit(main())
