#!/usr/bin/env python
"""Peak memory of `merge`: the streaming merge (one base tensor at a time) vs loading the whole model and
merging it in memory (what merge did before #22, and what PEFT's merge_and_unload does).

    python bench/bench_merge.py                 # ~2 min on 2 cores; --hidden / --layers for another size

A Qwen3-architecture stand-in wider than the test one (default hidden 512, 8 layers, real vocabulary: about
0.2 B parameters) saved in bfloat16 as checkpoints are published, in shards of --shard; a random LoRA adapter on
every projection; merged into bfloat16 (merge's default; both merge in float32 arithmetic).
Each approach runs in a fresh process; the figure is its peak anonymous memory (RssAnon of /proc/self/status,
sampled every 5 ms) above the level after imports, next to the model's and the largest shard's size. Anonymous,
not all of RSS: safetensors files are memory-mapped, and file pages the kernel can drop at will are not memory
the merge holds. Not a test: prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def anon_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20  # kB
    return float("nan")


def child(kind: str, base: str, adapter: str, out: str) -> dict:
    import threading
    import time

    import torch  # noqa: F401  (imports before the baseline)
    import transformers  # noqa: F401

    from qwen_sft import merge as merge_mod
    from qwen_sft.model import load_causal_lm, load_peft

    start, peak, done = anon_gb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon_gb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if kind == "streaming":
        merge_mod.merge(base, adapter, out, dtype="bfloat16")
    else:  # the whole model in memory (float32, as merge loaded it before #22), merged there, cast, saved
        model = load_peft(load_causal_lm(base, torch.float32), adapter).merge_and_unload()
        model.to(torch.bfloat16).save_pretrained(out)
    done.set()
    sampler.join()
    return {"peak_above_imports_gb": max(peak[0], anon_gb()) - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--shard", default="60MB")
    ap.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="qwen-sft-bench-merge-"))
    try:
        return _run(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a model, an adapter and two merges: about 1 GB


def _run(a, work: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from qwen_sft.assets import qwen3_tokenizer_dir
    from qwen_sft.testing import build_tiny_adapter

    ref = qwen3_tokenizer_dir()
    cfg = json.loads((ref / "config.json").read_text())
    cfg.update(hidden_size=a.hidden, intermediate_size=3 * a.hidden, num_hidden_layers=a.layers,
               num_attention_heads=8, num_key_value_heads=4, head_dim=a.hidden // 8, torch_dtype="float32",
               tie_word_embeddings=False, max_window_layers=a.layers)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.bfloat16)
    base = work / "base"
    model.save_pretrained(base, max_shard_size=a.shard)
    size = sum(p.numel() * 2 for p in model.parameters()) / 2**30
    del model
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (base / name).write_bytes((ref / name).read_bytes())
    shard = max(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30
    adapter = build_tiny_adapter(base, work / "adapter", seed=1, r=16, lora_alpha=32)
    print(f"model {size:.2f} GiB in bfloat16 ({len(list(base.glob('*.safetensors')))} shards, largest {shard:.2f} GiB)")
    print("| merge | peak anonymous memory above imports, GiB |\n|---|---|")
    for kind in ("in-memory", "streaming"):
        out = subprocess.run([sys.executable, __file__, "--child", kind, str(base), str(adapter), str(work / kind)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(f"| {kind} | {json.loads(out)['peak_above_imports_gb']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
