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


def variant_of(hub_id: str) -> str:
    """The variant a Qwen3 hub id names: Qwen/Qwen3-4B-Instruct-2507 -> instruct-2507, ...; else hybrid."""
    name = hub_id.lower()
    return next((v for v in VARIANTS if v != "hybrid" and v in name), "hybrid")


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
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(ASSET_DIR / name, tmp / name)
    changes = {"tokenizer_config.json": {"chat_template": template} if template else {},
               "config.json": spec["config"], "generation_config.json": spec["generation"]}
    for name, change in changes.items():
        if change:
            data = json.loads((tmp / name).read_text(encoding="utf-8"))
            data.update(change)
            (tmp / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with gzip.open(gz, "rb") as src, open(tmp / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
