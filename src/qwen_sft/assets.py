"""The Qwen3 tokenizer and chat templates shipped with the package (for the demo, the tests, and hub ids that
are not in the local cache).

The files are Qwen3-4B's published tokenizer and config (no weights), and the chat templates of the
Qwen3-2507 checkpoints, which share that tokenizer and differ from the hybrid model only in the template, a few
config values and the sampling defaults (VARIANTS). tokenizer.json ships gzipped (2.7 MB instead of 18 MB)
and is unpacked once per variant into a cache directory.
"""

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

ASSET_DIR = Path(__file__).parent / "assets" / "qwen3"
# The configs of the checkout the package runs from (sft/configs: an editable install): the UI offers them as bases,
# distributed.py reads the fsdp / deepspeed settings there.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "sft" / "configs"
TOKENIZER_FILES = ("tokenizer_config.json", "config.json", "generation_config.json")

# What the published Qwen3-2507 checkpoints change relative to hybrid Qwen/Qwen3-4B (their model cards and
# config files): the chat template, the context length and RoPE base, and the sampling defaults.
VARIANTS = {
    "hybrid": {"template": None, "config": {}, "generation": {}},
    "instruct-2507": {"template": "instruct-2507.chat_template.jinja",
                      "config": {"max_position_embeddings": 262144, "rope_theta": 5000000},
                      "generation": {"temperature": 0.7, "top_p": 0.8, "top_k": 20}},
    "thinking-2507": {"template": "thinking-2507.chat_template.jinja",
                      "config": {"max_position_embeddings": 262144, "rope_theta": 5000000},
                      "generation": {"temperature": 0.6, "top_p": 0.95, "top_k": 20}},
}


def cache_root() -> Path:
    return Path(os.environ.get("QWEN_SFT_CACHE", Path.home() / ".cache" / "qwen_sft"))


def qwen3_tokenizer_dir(variant: str = "hybrid") -> Path:
    """A directory holding the real Qwen3 tokenizer files with the variant's chat template, config and
    generation config, loadable by AutoTokenizer."""
    spec = VARIANTS[variant]
    gz = ASSET_DIR / "tokenizer.json.gz"
    template = (ASSET_DIR / spec["template"]).read_text(encoding="utf-8") if spec["template"] else None
    digest = hashlib.sha256(gz.read_bytes() + (template or "").encode()).hexdigest()[:16]
    target = cache_root() / f"qwen3-tokenizer-{variant}-{digest}"
    if (target / "tokenizer.json").exists():
        return target
    changes = {"tokenizer_config.json": {"chat_template": template} if template else {},
               "config.json": spec["config"], "generation_config.json": spec["generation"]}
    files = {}
    for name in TOKENIZER_FILES:
        files[name] = (ASSET_DIR / name).read_bytes()
        if changes[name]:
            data = json.loads(files[name].decode("utf-8"))
            data.update(changes[name])
            files[name] = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return _unpack(target, files, gz)


def _unpack(target: Path, files: dict[str, bytes], gz: Path) -> Path:
    """target holding files and gz unpacked as tokenizer.json, written beside it then renamed into place whole (a
    process that dies midway leaves only its own temporary directory; two that race write the same files)."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    with gzip.open(gz, "rb") as src, open(tmp / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- Qwen3.5 / 3.6 / 3.8

QWEN3_5_DIR = Path(__file__).parent / "assets" / "qwen3_5"
# One folder per published checkpoint (config.json, tokenizer_config.json with its chat template, ...): the
# 0.8B/2B template thinks only when asked, the 4B and up think by default, 3.6 adds preserve_thinking, 3.8
# reasoning_effort. Qwen3.8 ships a tokenizer with 7 more added tokens.
QWEN3_5_CHECKPOINTS = ("Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B", "Qwen3.6-27B",
                       "Qwen3.8-27B")


def qwen3_5_checkpoint_dir(checkpoint: str = "Qwen3.5-4B") -> Path:
    """A directory with the small files of a published Qwen3.5-generation checkpoint (one of QWEN3_5_CHECKPOINTS:
    config, tokenizer config, chat template, pre-processor and generation configs where it ships them) and its
    tokenizer.json: loadable by AutoTokenizer and AutoConfig, no weights. Unpacked once into the cache directory."""
    if checkpoint not in QWEN3_5_CHECKPOINTS:
        raise ValueError(f"no bundled Qwen3.5-generation checkpoint {checkpoint!r} (choose "
                         f"{', '.join(QWEN3_5_CHECKPOINTS)})")
    src = QWEN3_5_DIR / checkpoint
    gz = QWEN3_5_DIR / ("tokenizer-qwen3.8.json.gz" if checkpoint.startswith("Qwen3.8") else "tokenizer.json.gz")
    # not the weight index (Qwen3.6): a directory with an index and no shards is not a loadable model
    names = sorted(p.name for p in src.iterdir()
                   if p.suffix in (".json", ".jinja") and p.name != "model.safetensors.index.json")
    files = {n: (src / n).read_bytes() for n in names}
    digest = hashlib.sha256(gz.read_bytes() + b"".join(n.encode() + data for n, data in files.items()))
    target = cache_root() / f"qwen3_5-tokenizer-{checkpoint}-{digest.hexdigest()[:16]}"
    if (target / "tokenizer.json").exists():
        return target
    return _unpack(target, files, gz)


# ---------------------------------------------------------------- hub ids whose files are bundled

QWEN3_DENSE_SIZES = ("0.6B", "1.7B", "4B", "8B", "14B", "32B")  # the hybrid Qwen3 chat checkpoints (docs/models.md)


def bundled_tokenizer_dir(hub_id: str) -> Path | None:
    """The bundled directory holding exactly hub_id's tokenizer and chat template, for a checkpoint whose files
    are known to be these (the dense Qwen3 hybrid models, Qwen3-4B-Instruct-2507 / Thinking-2507, and the
    Qwen3.5 / 3.6 / 3.8 checkpoints of QWEN3_5_CHECKPOINTS); None for any other id (a Next, Coder, Base, MoE,
    quantized or fine-tuned checkpoint: its template may differ)."""
    name = hub_id.strip().lower()
    if name in {f"qwen/qwen3-{size}".lower() for size in QWEN3_DENSE_SIZES}:
        return qwen3_tokenizer_dir("hybrid")
    for variant in ("instruct-2507", "thinking-2507"):
        if name == f"qwen/qwen3-4b-{variant}":
            return qwen3_tokenizer_dir(variant)
    return next((qwen3_5_checkpoint_dir(c) for c in QWEN3_5_CHECKPOINTS if name == f"qwen/{c}".lower()), None)
