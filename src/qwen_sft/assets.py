"""The Qwen3 tokenizer and chat template shipped with the package (for the demo and the tests).

The files are Qwen3-4B's published tokenizer and config (no weights). tokenizer.json ships gzipped
(2.7 MB instead of 18 MB) and is unpacked once into a cache directory.
"""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

ASSET_DIR = Path(__file__).parent / "assets" / "qwen3"
TOKENIZER_FILES = ("tokenizer_config.json", "config.json", "generation_config.json")


def cache_root() -> Path:
    return Path(os.environ.get("QWEN_SFT_CACHE", Path.home() / ".cache" / "qwen_sft"))


def qwen3_tokenizer_dir() -> Path:
    """A directory holding the real Qwen3 tokenizer files, loadable by AutoTokenizer."""
    gz = ASSET_DIR / "tokenizer.json.gz"
    digest = hashlib.sha256(gz.read_bytes()).hexdigest()[:16]
    target = cache_root() / f"qwen3-tokenizer-{digest}"
    if (target / "tokenizer.json").exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(ASSET_DIR / name, tmp / name)
    with gzip.open(gz, "rb") as src, open(tmp / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
