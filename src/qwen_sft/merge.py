"""Merge a LoRA adapter into its base model, and check the merged model against base + adapter.

merge():
- streams the base checkpoint's safetensors shards one tensor at a time: the language model's tensors get the
  adapter merged in (PEFT's own per-module merge, float32 arithmetic, then the requested dtype), every other
  tensor (Qwen3.5's vision tower `model.visual.*` and MTP head `mtp.*`) is written byte for byte. The merged
  directory keeps the base's shard files, architecture and config.json (dtype updated), and its other files;
  peak memory is about one shard, not the model (`--max_shard_size` re-shards instead);
- keeps tied embeddings consistent: a checkpoint that ties lm_head to embed_tokens (Qwen3 up to 4B, Qwen3.5 up
  to 4B) stores one tensor. Untouched, it stays tied; when the adapter makes them differ (modules_to_save, LoRA
  on embed_tokens or lm_head), lm_head.weight is written too, with tie_word_embeddings false; an adapter that
  ties its own lm_head and embed_tokens deltas (PEFT's ensure_weight_tying) keeps them tied;
- writes a standalone directory (safetensors, config.json, generation_config.json stopping at
  <|im_end|> and <|endoftext|>, the adapter's tokenizer and chat template, qwen_sft.json) into a
  temporary directory next to the target and renames it into place: an interrupted or failed merge
  leaves nothing behind, and an existing output is replaced only with overwrite=True, and only after
  the new one is complete (and, with --validate, has passed validation). overwrite replaces only an earlier
  merge's output (its qwen_sft.json names what it was merged from: `merged_from`, merge's record), never another
  directory (`-o .`, a run directory, a folder of the user's), and never a directory whose run lock is held.

validate() reloads the merged directory with plain AutoModelForCausalLM.from_pretrained (the text-only causal LM,
also of a vision-language checkpoint) and compares it with base (float32) + adapter, unmerged (PeftModel), on chat
prompts. What fails:
- the largest |logit difference| (teacher-forced over prompt + reference reply, whole vocabulary)
  exceeds the dtype's tolerance: TOLERANCE[dtype] * max(1, largest |reference logit|);
- greedy decoding of N tokens differs, unless it differs only at a near tie (the two tokens' reference
  logits are within the tolerance, where rounding legitimately decides);
- the merged tokenizer renders the prompts to different token ids than the adapter's tokenizer.
Reported, never failing: whether generation stopped at <|im_end|> within N tokens (a random or barely
trained model does not stop; that is a training question, not a merge defect), and how much the adapter
moves the logits at all (when that is below the tolerance the check cannot tell merged from base).
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import argcheck, runlock
from .checkpoint import publish_dir
from .fileio import read_text, side_name
from .generate import generate_reply, stop_ids, stop_token_ids
from .data.template import served_options, served_prompt_ids, served_thinking, template_rules
from .errors import UserError
from .model import load_causal_lm, load_peft
from .data.tokenizer import save_tokenizer
from .runfiles import adapter_base_model, read_adapter, tokenizer_dir

log = logging.getLogger("qwen_sft")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Logit tolerance as a share of the logit scale, max(1, largest |reference logit|). The reference is
# float32 base + unmerged adapter; a merged float32 model differs from it only by the order of float32
# additions (~1e-6 relative), so 1e-4 leaves wide room yet catches any wrong weight. bfloat16 keeps 8
# significant bits (relative rounding up to 2^-8 ~ 0.4% per weight) and that error grows through the layers:
# a few percent of the logit scale is ordinary for a 30+-layer model. float16 keeps 11 bits (8x finer).
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
DEFAULT_PROMPTS = (
    "Hello! Who are you?",
    "What is 17 * 23? Answer with the number.",
    "Write a haiku about the sea.",
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Name three primary colors."}],
)
DEFAULT_VALIDATE_TOKENS = 16
MERGED_ROOT = Path("sft/outputs/merged_models")
RECORD = "qwen_sft.json"  # in a merge's output, its `merged_from` is the merge's record: what --overwrite may replace


# ---------------------------------------------------------------- adapter directory


def default_output_dir(adapter_dir: str | Path) -> Path:
    """sft/outputs/merged_models/{run}/ for sft/outputs/training/{run}/lora_adapters/."""
    p = Path(adapter_dir).resolve()
    name = p.parent.name if p.name == "lora_adapters" else p.name
    return MERGED_ROOT / name


# ---------------------------------------------------------------- merge


# Files of a model directory that are weights (written by the merge itself) or code (never run): not copied.
NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".py")
INDEX = "model.safetensors.index.json"


def checkpoint_dir(name_or_path: str) -> Path:
    """The local directory of a model: itself, or its snapshot in the Hugging Face cache (never downloaded here)."""
    from .runfiles import load_hint

    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception as e:  # not cached, or not a repo id at all
        raise UserError(load_hint(str(name_or_path), e)) from None


def _shards(base_dir: Path) -> list[str]:
    index = base_dir / INDEX
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    if (base_dir / "model.safetensors").is_file():
        return ["model.safetensors"]
    raise UserError(f"{base_dir}: no model.safetensors or {INDEX}: qwen-sft merges safetensors checkpoints only")


class _TensorMerger:
    """The adapter's deltas merged into the base's tensors one at a time, with PEFT's own merge of each module
    (LoRA, rsLoRA, DoRA, embedding LoRA, modules_to_save), on a PEFT model whose base is on the meta device: each
    adapted module gets its one base tensor, merges, and lets it go."""

    def __init__(self, peft_model, prefix: str, dtype: torch.dtype):
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper

        self.lm = peft_model.base_model.model  # the causal LM, LoRA layers in place
        self.prefix, self.dtype = prefix, dtype
        self.adapted = {n: m for n, m in self.lm.named_modules() if isinstance(m, (LoraLayer, ModulesToSaveWrapper))}
        self.done: set[str] = set()

    def lm_name(self, tensor_name: str) -> str | None:
        """The causal LM's name for a checkpoint tensor; None for tensors outside the language model (a vision
        tower, an MTP head), which are copied as they are."""
        if tensor_name.startswith(self.prefix):
            return "model." + tensor_name[len(self.prefix):]
        return tensor_name if tensor_name.startswith("lm_head.") else None

    def merged(self, lm_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor with the adapter merged in, in the output dtype (float32 arithmetic)."""
        from peft.utils import ModulesToSaveWrapper

        module_path, pname = lm_name.rsplit(".", 1)
        module = self.adapted.get(module_path)
        if module is not None:
            self.done.add(module_path)
            if isinstance(module, ModulesToSaveWrapper):  # the adapter holds the whole trained module
                tensor = getattr(module.modules_to_save["default"], pname)
            elif pname == "weight":
                base = module.get_base_layer()
                if base.weight.is_meta:  # (an adapted embedding layer may carry its base weight in the adapter)
                    base.weight = torch.nn.Parameter(tensor.float(), requires_grad=False)
                module.merge(safe_merge=True)
                tensor = base.weight.data
                base.weight = torch.nn.Parameter(torch.empty(tensor.shape, device="meta"), requires_grad=False)
        return tensor.detach().to(self.dtype) if tensor.is_floating_point() else tensor


class _ShardWriter:
    """Writes the merged tensors: into the base's own shard files (max_size None), or re-sharded at max_size."""

    def __init__(self, out: Path, max_size: int | None):
        self.out, self.max_size = out, max_size
        self.weight_map: dict[str, str] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.written: list[str] = []
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.max_size is not None and self.pending and self._pending_bytes() + size > self.max_size:
            self.flush(f".part-{len(self.written):05d}.safetensors")
        self.pending[name] = tensor.contiguous()
        self.total += size

    def _pending_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.pending.values())

    def flush(self, shard: str) -> None:
        if not self.pending:
            return
        _save_shard(self.pending, self.out / shard)
        self.weight_map.update({k: shard for k in self.pending})
        self.written.append(shard)
        self.pending = {}

    def finish(self, base_had_index: bool) -> None:
        if self.max_size is not None:  # name the parts as transformers does, now that their count is known
            self.flush(f".part-{len(self.written):05d}.safetensors")
            n = len(self.written)
            names = {old: ("model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors")
                     for i, old in enumerate(self.written, 1)}
            for old, new in names.items():
                (self.out / old).rename(self.out / new)
            self.weight_map = {k: names[v] for k, v in self.weight_map.items()}
            self.written = list(names.values())
            base_had_index = n > 1
        if base_had_index:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
            (self.out / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, path, metadata={"format": "pt"})


def _merge_tensors(base_dir: Path, adapter_dir: Path, out: Path, dtype: torch.dtype, max_shard_size) -> dict:
    """Every tensor of the base checkpoint into `out`: the language model's with the adapter merged, in `dtype`;
    any other (a vision tower, an MTP head) byte for byte. One base shard in memory at a time (or one output
    part of max_shard_size). Returns what the config needs to know: {'untied': bool, 'kept': n, 'merged': n}."""
    from safetensors import safe_open
    from transformers import AutoConfig

    from .families import family_of, meta_model

    config = AutoConfig.from_pretrained(base_dir)
    fam = family_of(config, str(base_dir))
    prefix = fam.lm_prefix((config.architectures or [None])[0])
    merger = _TensorMerger(load_peft(meta_model(config), adapter_dir, meta=True), prefix, dtype)
    shards = _shards(base_dir)
    names = set()
    for shard in shards:
        with safe_open(base_dir / shard, "pt") as f:
            names.update(f.keys())
    tied = bool(getattr(fam.text_config(config), "tie_word_embeddings", False)) and "lm_head.weight" not in names
    embed = prefix + "embed_tokens.weight"
    writer = _ShardWriter(out, None if max_shard_size is None else argcheck.size("--max_shard_size", max_shard_size))
    untied = False
    kept = 0
    for shard in shards:
        with safe_open(base_dir / shard, "pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                lm_name = merger.lm_name(name)
                if lm_name is None:
                    writer.add(name, tensor)  # as read: the same dtype and bytes
                    kept += 1
                    continue
                merged = merger.merged(lm_name, tensor)
                writer.add(name, merged)
                if name == embed and tied:
                    # The checkpoint ties lm_head to the embeddings: the (adapted or not) head starts from them.
                    head = merger.merged("lm_head.weight", tensor)
                    if not torch.equal(head, merged):
                        writer.add("lm_head.weight", head)
                        untied = True
                del tensor
        if max_shard_size is None:
            writer.flush(shard)
    writer.finish(base_had_index=(base_dir / INDEX).is_file())
    missed = sorted(set(merger.adapted) - merger.done)
    if missed:
        raise UserError(f"{adapter_dir}: the base checkpoint {base_dir} has no tensor for the adapted module(s) "
                        f"{', '.join(missed[:3])}: nothing was written")
    if untied:
        log.info("the adapter changed embed_tokens or lm_head: writing them untied (tie_word_embeddings false)")
    return {"untied": untied, "kept": kept, "merged": len(merger.done)}


def _write_config(base_dir: Path, tmp: Path, dtype_name: str, untied: bool) -> None:
    """The base's config.json (architecture, vision and MTP settings and all) with the merged dtype, and
    tie_word_embeddings false where the merge untied them."""
    cfg = json.loads((base_dir / "config.json").read_text())
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    cfg["dtype"] = dtype_name
    for c in filter(None, (cfg, text)):
        for key in ("dtype", "torch_dtype"):
            if key in c:
                c[key] = dtype_name
        if untied:
            c["tie_word_embeddings"] = False
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    _legacy_config_keys(tmp / "config.json")


def _copy_small_files(base_dir: Path, tmp: Path) -> None:
    """The base's other files (pre-processor configs, generation config, licence, ...), read through links."""
    for f in sorted(base_dir.iterdir()):
        if f.is_file() and not f.name.startswith(".") and not f.name.endswith(NOT_COPIED) and f.name != INDEX:
            shutil.copyfile(f, tmp / f.name)


def _legacy_config_keys(config_file: Path) -> None:
    # transformers 5 writes rope_parameters and dtype only; readers on transformers 4 (older vLLM) look for
    # rope_theta / rope_scaling / torch_dtype and would silently fall back to the wrong RoPE base.
    cfg = json.loads(config_file.read_text())
    # Only where the old keys say all of it: Qwen3.5's rope_parameters (multimodal sections, partial rotary
    # factor) have no transformers-4 spelling (its readers, 4.57 on, read rope_parameters).
    rp = cfg.get("rope_parameters")
    rest = {k: v for k, v in rp.items() if k != "rope_theta"} if isinstance(rp, dict) else {}
    plain = rest.get("rope_type", "default") != "default" or set(rest) <= {"rope_type"}
    if isinstance(rp, dict) and "rope_theta" in rp and "rope_theta" not in cfg and plain:
        cfg["rope_theta"] = rp["rope_theta"]
        if "rope_scaling" not in cfg:
            cfg["rope_scaling"] = None if rest.get("rope_type", "default") == "default" else rest
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    config_file.write_text(json.dumps(cfg, indent=2) + "\n")


def _write_merged(tmp: Path, base_model: str, adapter_dir: Path, dtype_name: str, max_shard_size) -> None:
    from transformers import GenerationConfig

    from .data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir(adapter_dir, base_model))
    eos = stop_token_ids(tok)
    base_dir = checkpoint_dir(base_model)
    _copy_small_files(base_dir, tmp)
    done = _merge_tensors(base_dir, adapter_dir, tmp, DTYPES[dtype_name], max_shard_size)
    _write_config(base_dir, tmp, dtype_name, done["untied"])
    try:
        gen = GenerationConfig.from_pretrained(base_dir)
    except OSError:  # the checkpoint ships none (Qwen3.5 up to 9B): the stop tokens still have to be there
        gen = GenerationConfig()
    gen.eos_token_id = eos
    if gen.pad_token_id is None:
        gen.pad_token_id = eos[1]
    if gen.bos_token_id is None:
        gen.bos_token_id = eos[1]
    gen.save_pretrained(tmp)
    save_tokenizer(tok, tmp)
    _, meta = read_adapter(adapter_dir)
    meta = dict(meta)
    meta.setdefault("base_model", base_model)
    meta.setdefault("template_kind", template_rules(tok).kind)
    meta["merged_from"] = {"adapter": str(adapter_dir.resolve()), "base_model": base_model, "dtype": dtype_name}
    (tmp / "qwen_sft.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("merged %s into %s (%s): %d adapted modules, %d tensors outside the language model kept byte for "
             "byte%s", adapter_dir, base_model, dtype_name, done["merged"], done["kept"],
             ", embeddings untied" if done["untied"] else "")


def _readable(d: Path) -> None:
    # mkdtemp makes the directory private (0700) and safetensors files come out 0600: give the result the
    # permissions a normally created directory would have, so a server running as another user can read it.
    umask = os.umask(0)
    os.umask(umask)
    d.chmod(0o777 & ~umask)
    for f in d.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def merge_record(out: Path) -> dict | None:
    """The record an earlier merge left in `out` (qwen_sft.json's merged_from), or None: not a merge's output."""
    try:
        meta = json.loads(read_text(out / RECORD, limit=1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    record = meta.get("merged_from") if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else None


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse an output that exists, unless overwrite and it is an earlier merge's output that no training holds.
    Checked before the merge and again just before the new output takes its place."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it (it is replaced only after "
                        f"the new merge is complete)")
    owner = runlock.run_owner(out)
    if owner is not None:
        raise UserError(f"{out} is a run directory in use by a training run (pid {owner.get('pid', '?')} on host "
                        f"{owner.get('host', '?')}); --overwrite never replaces it: choose another -o")
    if merge_record(out) is None:
        raise UserError(f"{out} is not the output of an earlier merge (no {RECORD} naming what it was merged from); "
                        "--overwrite replaces only that: choose another -o, or move that directory away yourself")


def merge(base_model: str | None, adapter_dir: str | Path, output_dir: str | Path | None = None,
          dtype: str = "bfloat16", overwrite: bool = False, *, max_shard_size: str | int | None = None,
          check: Callable[[Path], None] | None = None) -> Path:
    """Merge the adapter into the base model and write a standalone model directory; returns its path.

    base_model: None reads adapter_config.json's base_model_name_or_path. output_dir: None writes
    sft/outputs/merged_models/{run}/. check: called with the complete temporary directory before it is
    renamed into place; if it raises, nothing is written (an existing output is kept).
    """
    adapter_dir = Path(adapter_dir)
    cfg, _ = read_adapter(adapter_dir)
    recorded = cfg.get("base_model_name_or_path")
    base_model = str(base_model) if base_model else adapter_base_model(adapter_dir)
    if recorded and Path(recorded) != Path(base_model):
        log.warning("the adapter was trained on %s; merging it into %s", recorded, base_model)
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    out = Path(output_dir) if output_dir else default_output_dir(adapter_dir)
    out = out.resolve()
    for name, src in (("adapter", adapter_dir), ("base model", Path(base_model))):
        if src.exists() and (_inside(out, src.resolve()) or _inside(src.resolve(), out)):
            raise UserError(f"output directory {out} overlaps the {name} directory {src}; choose another")
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A merge killed outright (the OOM killer, kill -9) cannot remove its temporary directory: say so, with its
    # size. Not deleted here: another merge into the same output may still be writing it.
    prefix = side_name(out.name, "tmp-", room=8)  # within 255 bytes with mkdtemp's 8 characters
    for stale in sorted(out.parent.glob(glob.escape(prefix) + "*")):
        size = sum(f.stat().st_size for f in stale.rglob("*") if f.is_file()) / 1e9
        log.warning("%s (%.2f GB) is left from an earlier merge that was killed; delete it to free the space",
                    stale, size)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        _write_merged(tmp, base_model, adapter_dir, dtype, max_shard_size)
        _readable(tmp)
        if check is not None:
            check(tmp)
        _check_target(out, overwrite)  # a run may have started in it, or a user put files there, meanwhile
        publish_dir(tmp, out)
    except OSError as e:  # a full disk, say: one line, and nothing left behind
        shutil.rmtree(tmp, ignore_errors=True)
        where = f" ({e.filename})" if e.filename else ""
        raise UserError(f"cannot write the merged model {out}: {e.strerror or e}{where}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("merged model written to %s", out)
    return out


# ---------------------------------------------------------------- validate


@dataclass
class PromptCheck:
    prompt: str
    max_logit_diff: float
    tolerance: float
    adapter_effect: float  # max |logit(base) - logit(base + adapter)|
    new_tokens: int  # greedy tokens generated by the reference
    tokens_match: bool
    first_mismatch: int | None = None  # index of the first differing greedy token
    near_tie: bool = False  # the mismatch is at a reference-logit gap within the tolerance
    stopped: str | None = None  # "<|im_end|>", "<|endoftext|>" or None: no stop within the budget
    template_match: bool = True

    @property
    def ok(self) -> bool:
        return (self.max_logit_diff <= self.tolerance and (self.tokens_match or self.near_tie)
                and self.template_match)


@dataclass
class ValidationReport:
    merged_dir: str
    dtype: str
    tolerance_factor: float
    max_new_tokens: int
    prompts: list[PromptCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.prompts) and all(p.ok for p in self.prompts)

    @property
    def max_logit_diff(self) -> float:
        return max((p.max_logit_diff for p in self.prompts), default=float("nan"))

    @property
    def failures(self) -> list[str]:
        out = []
        for i, p in enumerate(self.prompts, 1):
            if not p.template_match:
                out.append(f"prompt {i}: the merged tokenizer renders the prompt differently from the adapter's")
            if p.max_logit_diff > p.tolerance:
                out.append(f"prompt {i}: max |logit diff| {p.max_logit_diff:.3g} > tolerance {p.tolerance:.3g}")
            if not p.tokens_match and not p.near_tie:
                out.append(f"prompt {i}: greedy tokens differ from token {p.first_mismatch}")
        return out

    def summary(self) -> str:
        lines = [f"validation of {self.merged_dir} ({self.dtype}) against float32 base + adapter, "
                 f"{self.max_new_tokens} greedy tokens, tolerance {self.tolerance_factor:g} x logit scale:"]
        for i, p in enumerate(self.prompts, 1):
            if p.tokens_match:
                greedy = f"greedy {p.new_tokens}/{p.new_tokens} tokens identical"
            else:
                greedy = (f"greedy differs at token {p.first_mismatch}"
                          + (" (a near tie: allowed)" if p.near_tie else ""))
            stop = f"stopped at {p.stopped}" if p.stopped else f"no <|im_end|> within {self.max_new_tokens} tokens"
            lines.append(f"  prompt {i} {_short(p.prompt)!r}: max |logit diff| {p.max_logit_diff:.3g} "
                         f"(tolerance {p.tolerance:.3g}, adapter effect {p.adapter_effect:.3g}); {greedy}; {stop}")
        weak = [i for i, p in enumerate(self.prompts, 1) if p.adapter_effect <= p.tolerance]
        if weak:
            lines.append(f"  note: on prompt(s) {weak} the adapter moves the logits by less than the tolerance, "
                         "so this check cannot tell the merged model from the base there")
        if self.prompts and not any(p.stopped for p in self.prompts):
            lines.append("  note: no prompt reached <|im_end|> (expected for an untrained or random model; "
                         "for a trained one, raise --validate_tokens or check that the training data ends its turns)")
        lines.append("validation PASSED" if self.ok else "validation FAILED:\n  " + "\n  ".join(self.failures))
        return "\n".join(lines)


def _short(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _as_messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def _render(tok, messages, enable_thinking: bool, options: dict) -> torch.Tensor:
    """The served prompt (template.served_prompt_ids) in the thinking mode and with the template options given."""
    return torch.tensor([served_prompt_ids(tok, messages, enable_thinking, None, options)])


def _greedy(model, tok, messages, enable_thinking: bool, max_new_tokens: int, options: dict | None = None) -> list[int]:
    return generate_reply(model, tok, messages, max_new_tokens, enable_thinking, greedy=True,
                          options=options).token_ids


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()


def _check_prompt(prompt, ref, merged, tok, ref_tok, enable_thinking, options, max_new_tokens, factor,
                  device) -> PromptCheck:
    """options: the template options the adapter was trained with (served_options), passed with enable_thinking."""
    messages = _as_messages(prompt)
    ids = _render(tok, messages, enable_thinking, options)
    template_match = torch.equal(ids, _render(ref_tok, messages, enable_thinking, options))
    ids = ids.to(device)
    ref_new = _greedy(ref, tok, messages, enable_thinking, max_new_tokens, options)
    merged_new = _greedy(merged, tok, messages, enable_thinking, max_new_tokens, options)
    seq = torch.cat([ids, torch.tensor([ref_new], dtype=ids.dtype, device=device)], dim=1)
    ref_logits = _logits(ref, seq)
    merged_logits = _logits(merged, seq)
    with ref.disable_adapter():
        base_logits = _logits(ref, seq)
    tol = factor * max(1.0, ref_logits.abs().max().item())
    check = PromptCheck(
        prompt=messages[-1]["content"], max_logit_diff=(merged_logits - ref_logits).abs().max().item(), tolerance=tol,
        adapter_effect=(base_logits - ref_logits).abs().max().item(), new_tokens=len(ref_new),
        tokens_match=ref_new == merged_new, template_match=template_match)
    if not check.tokens_match:
        j = next((k for k, (a, b) in enumerate(zip(ref_new, merged_new)) if a != b), min(len(ref_new), len(merged_new)))
        check.first_mismatch = j
        if j < len(ref_new) and j < len(merged_new):
            row = ref_logits[ids.shape[1] - 1 + j]  # both decodings share the prefix up to token j
            check.near_tie = (row[ref_new[j]] - row[merged_new[j]]).item() <= tol
    if merged_new and merged_new[-1] in stop_ids(merged, tok):
        check.stopped = tok.convert_ids_to_tokens(merged_new[-1])
    return check


def validate(base_model: str | None, adapter_dir: str | Path, merged_dir: str | Path, prompts=None,
             dtype: str | None = None, *, max_new_tokens: int | None = None,
             tolerance: float | None = None, device: str | torch.device | None = None,
             verbose: bool = True) -> ValidationReport:
    """Compare the merged directory with float32 base + adapter (unmerged) on chat prompts.

    prompts: strings (one user turn each) or message lists; None uses DEFAULT_PROMPTS. max_new_tokens:
    greedy tokens compared per prompt (None: DEFAULT_VALIDATE_TOKENS). dtype: the merged
    model's dtype name (None: read its config); it picks the tolerance factor unless tolerance is given.
    The report's .ok is what the CLI's exit status follows; verbose prints .summary().
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from .model import pick_device

    adapter_dir, merged_dir = Path(adapter_dir), Path(merged_dir)
    _, meta = read_adapter(adapter_dir)
    base_model = str(base_model) if base_model else adapter_base_model(adapter_dir)
    if dtype is None:
        saved = AutoConfig.from_pretrained(merged_dir).dtype
        dtype = str(saved).replace("torch.", "") if saved is not None else "float32"
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype}: choose one of {', '.join(DTYPES)}")
    factor = TOLERANCE[dtype] if tolerance is None else float(tolerance)
    device = torch.device(device) if device is not None else pick_device()
    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    max_new_tokens = DEFAULT_VALIDATE_TOKENS if max_new_tokens is None else int(max_new_tokens)
    if not prompts:
        raise UserError("validate: no prompts given")

    from .data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(merged_dir))
    ref_tok = load_tokenizer(tokenizer_dir(adapter_dir, base_model))
    # Prompts as a server builds them for the mode the model was trained in (or its template's own).
    enable_thinking = served_thinking(ref_tok, meta, None, str(adapter_dir))
    options = served_options(ref_tok, meta, enable_thinking, str(adapter_dir))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).to(device).eval()
    if merged.dtype != DTYPES[dtype]:
        log.warning("merged model loaded as %s, expected %s", merged.dtype, dtype)
    ref = load_peft(load_causal_lm(base_model, torch.float32), adapter_dir).to(device).eval()
    report = ValidationReport(str(merged_dir), dtype, factor, max_new_tokens)
    try:
        for prompt in prompts:
            report.prompts.append(_check_prompt(prompt, ref, merged, tok, ref_tok, enable_thinking, options,
                                                max_new_tokens, factor, device))
    finally:
        del ref, merged
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if verbose:
        print(report.summary(), flush=True)
    return report


# ---------------------------------------------------------------- CLI


class ValidationFailed(Exception):
    def __init__(self, report: ValidationReport):
        super().__init__("validation failed")
        self.report = report


def add_merge_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("adapter", nargs="?", metavar="ADAPTER",
                        help="LoRA adapter directory (same as --lora_adapter)")
    parser.add_argument("--lora_adapter", help="LoRA adapter directory (a run's lora_adapters/)")
    parser.add_argument("--base_model", help="base model (default: base_model_name_or_path in adapter_config.json)")
    parser.add_argument("-o", "--output_dir", help="output directory (default: sft/outputs/merged_models/{run}/)")
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES), help="dtype of the merged weights")
    parser.add_argument("--validate", action="store_true",
                        help="compare the merged model with base + adapter before writing it; exit 1 on mismatch")
    parser.add_argument("--test_prompt", help="after merging, print the merged model's (greedy) answer to this prompt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--max_new_tokens", type=int, default=256, help="token budget of the --test_prompt answer")
    parser.add_argument("--validate_tokens", type=int, default=DEFAULT_VALIDATE_TOKENS,
                        help="greedy tokens compared per validation prompt")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="validation logit tolerance as a share of the logit scale (default by dtype: "
                             + ", ".join(f"{k} {v:g}" for k, v in TOLERANCE.items()) + ")")
    parser.add_argument("--max_shard_size", default=None,
                        help="re-shard the merged weights into files of at most this size (default: the base's own "
                             "shard files, one of them in memory at a time)")
    return parser


def run_merge(args: argparse.Namespace) -> int:
    # Every number and path before the (slow) merge: a bad --max_shard_size failed only once the merge was done,
    # and a negative --tolerance was reported as a model mismatch.
    for flag in ("adapter", "lora_adapter", "base_model", "output_dir"):
        argcheck.path(f"--{flag}", getattr(args, flag))
    argcheck.number("--validate_tokens", args.validate_tokens, least=1)
    argcheck.number("--max_new_tokens", args.max_new_tokens, least=1)
    argcheck.number("--tolerance", args.tolerance, above=0)
    max_shard_size = None if args.max_shard_size is None else argcheck.size("--max_shard_size", args.max_shard_size)
    adapter = args.lora_adapter or args.adapter
    if args.lora_adapter and args.adapter and Path(args.lora_adapter) != Path(args.adapter):
        raise UserError(f"two adapters given ({args.adapter} and --lora_adapter {args.lora_adapter}); pass one")
    if not adapter:
        raise UserError("merge: pass the adapter directory (ADAPTER or --lora_adapter)")
    target = Path(args.output_dir) if args.output_dir else default_output_dir(adapter)
    def check(tmp: Path) -> None:
        report = validate(args.base_model, adapter, tmp, dtype=args.dtype, tolerance=args.tolerance,
                          max_new_tokens=args.validate_tokens, verbose=False)
        report.merged_dir = str(target)  # not the temporary directory it was checked in
        print(report.summary(), flush=True)
        if not report.ok:
            raise ValidationFailed(report)

    try:
        out = merge(args.base_model, adapter, target, dtype=args.dtype, overwrite=args.overwrite,
                    max_shard_size=max_shard_size, check=check if args.validate else None)
    except ValidationFailed:
        print("the merged model does not match base + adapter: nothing was written"
              + (f" ({target} was kept as it was)" if target.exists() else ""), file=sys.stderr)
        return 1
    print(f"merged model: {out}")
    if args.test_prompt:
        from .generate import chat_once, load_for_chat

        from .runfiles import read_run_meta

        model, tok, enable_thinking = load_for_chat(out)
        options = served_options(tok, read_run_meta(out), enable_thinking, str(out))
        print(f"test prompt: {args.test_prompt}")
        chat_once(model, tok, [{"role": "user", "content": args.test_prompt}], args.max_new_tokens,
                  enable_thinking, stream=True, greedy=True, options=options)
    return 0


def _setup_logging() -> None:
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of sft/scripts/merge_lora.py and quick_merge.py."""
    parser = add_merge_args(argparse.ArgumentParser(prog="merge_lora",
                                                    description="Merge a LoRA adapter into its base model."))
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        return run_merge(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # the partial merge was removed on the way out (merge())
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
