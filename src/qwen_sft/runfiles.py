"""What a run leaves on disk and how the CLI and the UI read it back, without importing torch.

A saved adapter directory (a run's lora_adapters/), a merged model's directory and their qwen_sft.json; the
names of the merge dtypes and of the eval metrics, which the UI offers and shows; the one-line hint for a model
path that did not load (load_hint). The modules that do the work
(model.py, merge.py, evaluation/) import these from here, so the light commands (`--help`, `prepare`,
`cache ls`) and the UI server share one copy with them and never pay for torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

# The dtypes a merged model is written in (merge --dtype); merge.DTYPES maps them to torch dtypes.
DTYPE_NAMES = ("bfloat16", "float16", "float32")
# The behavior rates and all metrics of an eval, in the order the report and the UI's table show them.
RATE_KEYS = ("stop_rate", "unexpected_reasoning", "missing_reasoning", "language_match")
EVAL_KEYS = ("loss", "perplexity", "rouge_l", "bleu", *RATE_KEYS)

ADAPTER_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def read_run_meta(directory: str | Path) -> dict:
    """qwen_sft.json of an adapter or merged-model directory (base model, thinking mode, ...), or {}."""
    f = Path(directory) / "qwen_sft.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: unreadable JSON: {e}") from None


def read_adapter(adapter_dir: str | Path) -> tuple[dict, dict]:
    """(adapter_config.json, qwen_sft.json or {}) of an adapter directory; UserError when it is not one."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise UserError(f"{adapter_dir}: adapter directory not found")
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json); "
                        f"pass the run's lora_adapters/ directory")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        # peft would load an adapter_model.bin with torch.load (a pickle): safetensors only, as for models.
        pickled = (adapter_dir / "adapter_model.bin").is_file()
        raise UserError(f"{adapter_dir}: no adapter_model.safetensors" + (
            " (only adapter_model.bin, a PyTorch pickle: qwen-sft loads safetensors only; save the adapter again "
            "with save_pretrained(..., safe_serialization=True))" if pickled else ""))
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file}: unreadable JSON: {e}") from None
    return cfg, read_run_meta(adapter_dir)


def adapter_base_model(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on: adapter_config.json, else qwen_sft.json."""
    cfg, meta = read_adapter(adapter_dir)
    base = cfg.get("base_model_name_or_path") or meta.get("base_model")
    if not base:
        raise UserError(f"{adapter_dir}: the adapter does not name its base model; pass --base_model")
    return str(base)


def tokenizer_dir(path: str | Path, base_model: str | None = None) -> str:
    """Where inference loads the tokenizer from. An adapter directory: its own copy (the tokenizer and
    chat template used in training) when it saved one, else its base model (base_model overrides the
    one it names). Any other directory: itself."""
    p = Path(path)
    if not is_adapter_dir(p):
        return str(path)
    if all((p / n).is_file() for n in ADAPTER_TOKENIZER_FILES):
        return str(p)
    return base_model or adapter_base_model(p)


def looks_like_path(name: str) -> bool:
    """A name that can only be a filesystem path, never a hub id ('name' or 'org/name')."""
    return (name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1
            or "\\" in name or not name.strip())


def load_hint(name_or_path: str, err: Exception) -> str:
    """One line for a model or tokenizer that did not load: what the path is (a run, .bin weights, missing) and the
    fix."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    path = Path(name_or_path)
    if path.is_dir() and not (path / "config.json").is_file():
        why = f"{name_or_path}: not a model directory (no config.json)"
        if (path / "lora_adapters").is_dir():
            return f"{why}; it looks like a training run: pass {path / 'lora_adapters'}"
        return f"{why}; pass a base or merged model directory, or a run's lora_adapters/"
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        return (
            f"{name_or_path}: holds only PyTorch .bin weights; qwen-sft loads safetensors only: convert them "
            f"(load with transformers and save_pretrained(..., safe_serialization=True)) and pass the new directory"
        )
    if path.exists():
        return f"{name_or_path}: cannot load: {first}"
    if looks_like_path(name_or_path):
        return f"{name_or_path}: directory not found; check the path (model_name_or_path, --base_model or MODEL)"
    return (f"{name_or_path}: not a local directory and could not be loaded from the Hugging Face hub "
            f"(offline, or not in the local cache?). Download it first (`hf download {name_or_path}`) or set "
            f"model_name_or_path to a local directory. ({first})")
