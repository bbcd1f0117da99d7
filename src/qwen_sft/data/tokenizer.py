"""Tokenizers: loaded once per content of their files and thread (transformers 5 parses Qwen's 11 MB
tokenizer.json in Python: 1-2 s each), the named or bundled one, and saving one readable by transformers 5 and 4."""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from ..errors import UserError
from ..runfiles import load_hint as _load_hint
from .template import DIGESTS


# Tokenizers loaded from local folders, by the content of their files, per thread: loading Qwen's tokenizer takes
# 1-2 s (transformers 5 parses tokenizer.json in Python), and one process that trains, merges, evaluates or serves
# pages loads the same files again and again (the base model's folder, then every adapter's copy). Per thread,
# because a fast tokenizer's padding and truncation settings are state inside it: two threads encoding with one
# object can fail ("Already borrowed").
_TOKENIZERS: OrderedDict = OrderedDict()
_TOKENIZERS_KEPT = 6  # ~130 MB each (Qwen3's; transformers keeps the vocabulary and merges in Python too)
_TOKENIZERS_LOCK = threading.Lock()
_TOKENIZER_SUFFIXES = {".json", ".jinja", ".txt", ".model", ".tiktoken", ".py"}  # a tokenizer is read from these


def _tokenizer_key(name_or_path: str, trust_remote_code: bool):
    """sha256 of a local folder's tokenizer files (names and bytes; weights are not read), or None for a hub id or
    a folder that cannot be read whole: a changed file is a new key, so a changed tokenizer is loaded again."""
    folder = Path(name_or_path)
    h = hashlib.sha256()
    try:
        if not folder.is_dir():
            return None
        for f in sorted(folder.iterdir()):
            if f.suffix in _TOKENIZER_SUFFIXES and f.is_file():
                data = f.read_bytes()
                h.update(f"{f.name}\0{len(data)}\0".encode())
                h.update(data)
    except OSError:
        return None
    return h.hexdigest(), trust_remote_code, threading.get_ident()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, *, require_chat_template: bool = True):
    """The tokenizer, pad token set, chat template required (unless require_chat_template is False: the caller
    reports a missing one itself). Files loaded once in this thread are not parsed again: a shallow copy of that
    tokenizer comes back (its name_or_path this one), sharing its state, so callers never change one in place
    (copy.deepcopy first; setting chat_template on the copy is fine: it is the copy's own attribute)."""
    key = _tokenizer_key(name_or_path, trust_remote_code)
    with _TOKENIZERS_LOCK:
        kept = _TOKENIZERS.get(key)
        if kept is not None:
            _TOKENIZERS.move_to_end(key)
    if kept is None:
        kept = _load_tokenizer(name_or_path, trust_remote_code)
        kept.__dict__[DIGESTS] = {}  # shared by the copies: each hash of these files is computed once
        if key is None or _tokenizer_key(name_or_path, trust_remote_code) != key:  # changed while it loaded
            return kept
        with _TOKENIZERS_LOCK:
            _TOKENIZERS[key] = kept
            while len(_TOKENIZERS) > _TOKENIZERS_KEPT:
                _TOKENIZERS.popitem(last=False)
    if require_chat_template and not kept.chat_template:
        raise UserError(f"{name_or_path}: the tokenizer has no chat template; use a Qwen3 chat model or its tokenizer")
    tok = copy.copy(kept)
    tok.name_or_path = name_or_path
    return tok


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off for the block (and back on after it, unless it was off before).
    Parsing tokenizer.json makes about a million small objects, and each few thousand start a collection that
    walks every object the process holds: in a process that already holds a model or other tokenizers, half of
    a load's time went to those walks (1.3-1.5 s against 0.7 s measured; bench/bench_tokenizer.py). The
    parse makes no garbage cycles to collect."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _load_tokenizer(name_or_path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        with gc_paused():
            tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(_load_hint(name_or_path, e)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def named_tokenizer(name: str | None):
    """The named tokenizer; the bundled hybrid Qwen3 one when none is named. A Qwen3-generation hub id that is
    not in the local cache is stood in for only by the bundled copy of that checkpoint's own files
    (assets.bundled_tokenizer_dir); any other is refused: check, inspect, cache build and the UI's data pages
    would otherwise validate masks and thresholds with a template training does not use."""
    from ..assets import bundled_tokenizer_dir, qwen3_tokenizer_dir

    if not name:
        return load_tokenizer(str(qwen3_tokenizer_dir()))
    if Path(name).exists() or not name.startswith("Qwen/Qwen3") or _in_hf_cache(name):
        return load_tokenizer(name)
    bundled = bundled_tokenizer_dir(name)
    if bundled is None:
        raise UserError(f"{name}: not in the local cache, and its chat template is not bundled with qwen-sft (the "
                        "dense Qwen3, Qwen3-4B-Instruct/Thinking-2507 and Qwen3.5 / 3.6 / 3.8 ones are); the masks and "
                        "thresholds depend on the model's own template, so download its tokenizer first "
                        f"(`hf download {name} --include '*.json' '*.jinja'`) or pass --tokenizer DIR")
    print(f"note: {name} is not in the local cache; using the bundled copy of its tokenizer and chat template",
          file=sys.stderr)
    return load_tokenizer(str(bundled))


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "tokenizer_config.json"), str)


def save_tokenizer(tok, out: Path) -> None:
    """The tokenizer and chat template, readable by transformers 5 and 4 (vLLM on either)."""
    tok.save_pretrained(out)
    # transformers 5 puts the template in chat_template.jinja only; also keep it in tokenizer_config.json
    # (identical text) for readers that predate the .jinja file.
    tc_file = out / "tokenizer_config.json"
    tc = json.loads(tc_file.read_text())
    if isinstance(tok.chat_template, str) and not tc.get("chat_template"):
        tc["chat_template"] = tok.chat_template
    # transformers 5 writes the special-token list as extra_special_tokens; transformers 4 (vLLM on it) reads
    # that key as a {name: token} dict and fails with "'list' object has no attribute 'keys'". Under its
    # transformers-4 name, additional_special_tokens (as Qwen3's published tokenizer_config.json has it), both
    # versions load the same tokens.
    extra = tc.get("extra_special_tokens")
    if isinstance(extra, list) and "additional_special_tokens" not in tc:
        tc["additional_special_tokens"] = tc.pop("extra_special_tokens")
    # transformers 5 leaves the added tokens out of tokenizer_config.json; a folder without them is loaded by
    # parsing its 11 MB tokenizer.json twice (once more for those 26 tokens), ~0.6 s more on every load of an
    # adapter, checkpoint or merged model. Written as Qwen's published files have them (same keys and flags).
    if "added_tokens_decoder" not in tc:
        tc["added_tokens_decoder"] = {
            str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                     "single_word": t.single_word, "special": t.special}
            for i, t in sorted(tok.added_tokens_decoder.items())}
    tc_file.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
