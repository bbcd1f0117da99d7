"""The training config: one typed dataclass, YAML + key=value overrides, one validate().

Every field carries its facts in its metadata (_f): a help text, and where they apply its choices, its bounds
and whether it names a path; its type is the annotation. validate(), the CLI's choices, the UI's form and the
README's config reference (describe(); `python -m qwen_sft.config --readme README.md` rewrites it) all read
them. Unknown keys are errors naming the closest valid key; numbers written the way YAML reads as strings
('1e-4') are accepted as numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import argcheck
from .errors import ConfigError, UserError
from .data.formats import CONTAINERS, SCHEMAS
from .fileio import write_text

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # Qwen3's
# lora_target_modules values that are not module names: the family's projections (families.py), PEFT's all-linear.
TARGET_WORDS = ("all-projections", "all-linear")


@dataclass(frozen=True)
class Bounds:
    """The numbers a key takes: from low up to high (None: no upper end), each end included unless *_open.
    null: what null means, for a key that also takes null."""
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: str = ""

    def holds(self, x) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        return above and (self.high is None or (x < self.high if self.high_open else x <= self.high))

    def __str__(self) -> str:  # "> 0", ">= 1", "in [0, 1)", "in (0, 1e6]"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        low, high = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {low}{_number(self.low)}, {_number(self.high)}{high}"


def _number(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")  # 1e6, not 1e+06


POSITIVE, NOT_NEGATIVE, SHARE, BELOW_ONE = (
    Bounds(0, low_open=True),
    Bounds(0),
    Bounds(0, 1),
    Bounds(0, 1, high_open=True),
)


def _f(default, help: str, *, choices: tuple = (), bounds: Bounds | None = None, path: bool | str = False, **kw):
    """A field and its facts (its metadata), which validate(), the CLI, the UI's form and the README table read:
    help: what it means; choices: the closed set of values it takes (of its single value, for a key that also
    takes a list); bounds: the numbers it takes; path: it names a file or directory (a text: what it takes, in
    words, where that is more than a path). The type is the annotation."""
    meta = {"help": help, "choices": tuple(choices), "bounds": bounds, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


# Path keys with their own rules in validate (the messages say what else they take).
OWN_PATH_RULES = ("data_cache_dir", "run_name")
# Strategies that split the model weights across processes (no process holds a whole model).
SHARDED_STRATEGIES = ("fsdp", "deepspeed_zero3")


@dataclass
class TrainConfig:
    # ---- model
    model_name_or_path: str = _f("Qwen/Qwen3-4B", "Hub id or local directory of the base model.", path="hub id or path")
    trust_remote_code: bool = _f(False, "Run model code shipped with the checkpoint. Off: Qwen3 needs none.")
    bf16: bool = _f(True, "Train in bfloat16 where the hardware supports it; float32 otherwise (always on CPU).")
    attn_implementation: str = _f(
        "auto",
        "The attention kernel. auto: flash_attention_2 on CUDA when installed and "
        "flash_attention is true, else sdpa_packed (SDPA per example of a "
        "padding-free row, no mask).",
        choices=("auto", "sdpa_packed", "sdpa", "eager", "flash_attention_2"),
    )
    flash_attention: bool = _f(True, "Prefer FlashAttention 2 when attn_implementation is auto.")
    liger_kernel: bool | str = _f(
        "auto",
        "liger-kernel's fused Triton kernels for RMSNorm and RoPE, and SwiGLU when "
        "fused_norm_mlp is off (CUDA only; `pip install liger-kernel`, in the .[gpu] "
        "extra). auto: used on CUDA when installed (all three: 1.19x step speed on "
        "an H200). The loss stays qwen-sft's chunked cross-entropy.",
        choices=("auto", True, False),
    )
    quantization_bit: int | None = _f(None, "4 for QLoRA (CUDA + bitsandbytes only); null for none.", choices=(None, 4))
    # ---- LoRA
    lora_rank: int = _f(64, "LoRA rank r.", bounds=POSITIVE)
    lora_alpha: float = _f(
        128, "LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with use_rslora).", bounds=POSITIVE
    )
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.", bounds=BELOW_ONE)
    lora_target_modules: list[str] | str = _f("all-projections", "Module names to adapt, or all-projections (every "
                                                                 "projection of every layer of the model's family, "
                                                                 "docs/models.md: Qwen3 q/k/v/o, gate/up/down; Qwen3.5 "
                                                                 "also the linear-attention in_proj_qkv, in_proj_z, "
                                                                 "out_proj), or all-linear (PEFT's: every Linear but "
                                                                 "the lm_head).", choices=TARGET_WORDS)
    use_rslora: bool = _f(False, "Rank-stabilized LoRA scaling.")
    use_dora: bool = _f(False, "Weight-decomposed LoRA (DoRA); slower.")
    fused_lora: bool = _f(True, "Run each LoRA Linear (frozen base matmul + adapter) as one autograd function (pure "
                                "PyTorch): the scaled adapter add inside an in-place matmul, dropout masks regenerated "
                                "in backward instead of kept, gradients accumulated in place. Same results as PEFT's "
                                "forward (false). Off by itself for QLoRA, DoRA, fsdp and deepspeed_zero3.")
    fused_norm_mlp: bool = _f(True, "Qwen3's RMSNorm and MLP as autograd functions that keep less for backward: "
                                    "RMSNorm keeps x, not its fp32 copy; the MLP keeps gate and up, not silu(gate) nor "
                                    "(with a LoRA down_proj) their product. Same math as transformers' modules "
                                    "(false). Where liger-kernel is in use its RMSNorm replaces ours; the MLP stays "
                                    "ours.")
    # ---- data
    dataset: list[str] | str = _f(
        "sft/data/train.jsonl", "A data file, a directory of data files, or a list of them.", path=True
    )
    data_format: str | None = _f(
        None, "Force a format for every file; null: detect it.", choices=(None, *SCHEMAS, *CONTAINERS)
    )
    skip_invalid: bool = _f(False, "Drop invalid rows (counted in the data report) instead of stopping.")
    cutoff_len: int = _f(4096, "Maximum tokens per row; longer rows are cut at the right end.", bounds=POSITIVE)
    enable_thinking: bool | str = _f("auto", "Thinking mode the model is trained and served in: auto (read off the "
                                             "model's chat template: never for Instruct-2507, always for "
                                             "Thinking-2507, off for hybrid Qwen3, the checkpoint's own default for "
                                             "Qwen3.5 / 3.6 / 3.8: on for 4B and up, off for 0.8B / 2B; config.yaml "
                                             "records the mode resolved), true (reasoning trained: hybrid or "
                                             "Thinking-2507), false (answers directly, reasoning in rows dropped: "
                                             "hybrid or Instruct-2507). A mode the model cannot be served in is "
                                             "refused.", choices=("auto", True, False))
    preserve_thinking: bool | None = _f(None, "Qwen3.6 / 3.8 chat templates: true renders the reasoning of earlier "
                                              "replies in the prompt (the template's preserve_thinking), false drops "
                                              "it; null: the template's default (3.6: dropped, 3.8: kept). Passed to "
                                              "the template in training, chat, eval and merge --validate, and recorded "
                                              "with the model; refused for a template without the option.")
    reasoning_effort: str | None = _f(None, "Qwen3.8 chat template: the reasoning-effort instruction its thinking mode "
                                            "adds to the system prompt (that template knows xhigh, medium and low); "
                                            "null: the template's default (xhigh). Passed and recorded like "
                                            "preserve_thinking; a value the template does not know is refused.")
    train_on: str = _f(
        "all", "all: loss on every assistant turn; last: only on the final one.", choices=("all", "last")
    )
    val_size: float = _f(
        0.0, "Held-out share (0 < x < 1) or number of rows (x >= 1) for eval loss; 0: no eval.", bounds=NOT_NEGATIVE
    )
    max_dropped_share: float = _f(0.05, "Fail when more than this share of rows is dropped (invalid or no trained "
                                        "token).", bounds=SHARE)
    max_truncated_share: float = _f(
        0.25, "Fail when more than this share of rows has its reply cut by cutoff_len.", bounds=SHARE
    )
    max_duplicate_share: float = _f(0.5, "Fail when more than this share of rows are exact duplicates.", bounds=SHARE)
    max_no_reasoning_share: float = _f(0.5, "Thinking mode: fail when more than this share of rows has no reasoning "
                                            "(the model would learn to answer with an empty think block); raise it "
                                            "when that is what you want.", bounds=SHARE)
    preprocessing_num_workers: int | None = _f(
        None,
        "Processes that parse and encode the data (null: every core this "
        "process may use, os.sched_getaffinity). The rows are the same "
        "for any number.",
        bounds=Bounds(1, null="for every available core"),
    )
    data_cache_dir: str | None = _f("auto", "Where encoded rows are kept, so the next run, resume, check or inspect of "
                                            "the same data skips encoding (shown in the log; `qwen-sft cache ls` / "
                                            "`cache clean`). auto: $QWEN_SFT_DATA_CACHE, else $QWEN_SFT_CACHE/data, "
                                            "else ~/.cache/qwen_sft/data; null: keep nothing (a temporary directory, "
                                            "removed at exit).", path="path, auto")
    # ---- batching
    per_device_train_batch_size: int = _f(2, "Examples per micro-batch.", bounds=POSITIVE)
    gradient_accumulation_steps: int = _f(8, "Micro-batches per optimizer step.", bounds=POSITIVE)
    group_by_length: bool = _f(False, "Put examples of similar length in the same micro-batch (still shuffled every "
                                      "epoch). "
                               "Saves padding compute when padding_free is false; with padding_free it saves nothing "
                               "and "
                               "raises peak memory (the longest rows share a micro-batch), hence off by default.")
    padding_free: bool = _f(True, "Concatenate a micro-batch into one row with restarting position ids (no padding "
                                  "compute).")
    packing: bool = _f(False, "Pack several short examples into one sequence of up to cutoff_len tokens (needs "
                              "padding_free; "
                       "examples still never attend to each other); per_device_train_batch_size then counts packed "
                       "sequences.")
    dataloader_num_workers: int = _f(0, "Worker processes for batch collation.", bounds=NOT_NEGATIVE)
    distributed_strategy: str = _f(
        "ddp",
        "How several processes share the work (fsdp and deepspeed need CUDA GPUs; "
        "settings in sft/configs/accelerate/fsdp.yaml and sft/configs/deepspeed/). "
        "See docs/multi_gpu.md.",
        choices=("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"),
    )
    # ---- optimization
    num_train_epochs: float = _f(
        3, "Passes over the training data (ignored when max_steps > 0).", bounds=Bounds(0, 1e6, low_open=True)
    )
    max_steps: int = _f(-1, "Optimizer steps to run; -1: derive from num_train_epochs.")
    learning_rate: float = _f(5e-5, "Peak learning rate (AdamW).", bounds=POSITIVE)
    weight_decay: float = _f(0.0, "AdamW weight decay.", bounds=NOT_NEGATIVE)
    warmup_ratio: float = _f(0.03, "Share of steps with linear warmup.", bounds=BELOW_ONE)
    lr_scheduler_type: str = _f(
        "cosine", "Learning-rate schedule after warmup.", choices=("cosine", "linear", "constant")
    )
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 disables.", bounds=NOT_NEGATIVE)
    gradient_checkpointing: bool = _f(True, "Recompute activations in backward: less memory, about 40% more compute.")
    offload_activations: bool = _f(False, "Keep what autograd saves between forward and backward in CPU memory (pinned "
                                          "on CUDA): with gradient_checkpointing that is each layer's input (about 1.3 "
                                          "GiB for Qwen3-4B at 2 x 4096). Less VRAM, a PCIe copy each way per step; "
                                          "not yet measured on a GPU.")
    plan_check: bool = _f(True, "On CUDA, refuse to start when `qwen-sft plan` predicts a peak above the GPU's free "
                                "memory by more than its measured error, naming the first change that fits (the plan's "
                                "one-line summary is printed at the start of every run). false: start anyway.")
    loss_chunk_size: int = _f(512, "Trained positions per chunk of lm_head + cross-entropy (bounds logits memory: 512 "
                                   "x 151,936 fp32 is 0.3 GB).", bounds=POSITIVE)
    seed: int = _f(42, "Seed for LoRA init, data order and dropout.")
    # ---- outputs
    output_dir: str = _f("sft/outputs/training", "Parent directory of runs.", path=True)
    run_name: str = _f("qwen3-lora", "Run directory name: outputs go to {output_dir}/{run_name}/. Letters (any "
                                     "script), digits and . _ - + = @, with / between folder names; no spaces, '?', "
                                     "'#', ',', quotes or control characters (a run name is also a link in the UI), no "
                                     "leading '-', no '.' or '..' part, at most 255 bytes a name.", path=True)
    logging_steps: int = _f(10, "Log train loss every N optimizer steps.", bounds=POSITIVE)
    eval_steps: int = _f(100, "Evaluate every N optimizer steps (when val_size > 0).", bounds=POSITIVE)
    eval_sample_generations: int = _f(
        0,
        "At each eval, log greedy replies to the first N held-out rows to TensorBoard "
        "(0: off; refused with fsdp / deepspeed_zero3, whose weights are sharded).",
        bounds=NOT_NEGATIVE,
    )
    save_steps: int = _f(200, "Save a checkpoint every N optimizer steps.", bounds=POSITIVE)
    save_total_limit: int = _f(3, "Keep at most N checkpoints (oldest deleted first).", bounds=POSITIVE)
    report_to: str = _f(
        "tensorboard",
        "Where to log the training curves besides the console and loss_history.json: "
        "tensorboard ({output_dir}/{run_name}/logs) or none.",
        choices=("tensorboard", "none"),
    )
    resume_from_checkpoint: str | None = _f(None, "A checkpoint path, or 'auto' for the latest complete one of the run "
                                                  "directory's own run.", path="path, auto")
    force_resume: bool = _f(False, "Resume even when the data, base model, lora_alpha / use_rslora or a run-defining "
                                   "setting (learning_rate, schedule, warmup, weight_decay, max_grad_norm, "
                                   "lora_dropout, ...) differ from the checkpoint's; changed settings then apply from "
                                   "the checkpoint's step on (listed in config.yaml and metrics.json). Never a changed "
                                   "LoRA shape (lora_rank, lora_target_modules, use_dora): the checkpoint's weights "
                                   "cannot be loaded into it, so that resume is refused before anything is written.")
    overwrite_output_dir: bool = _f(False, "Start a new run in a run directory that holds another run's checkpoints or "
                                           "results: they, and the earlier run's merged/, eval/, logs and live record, "
                                           "are moved into overwritten/{its run id}/ inside the run directory first "
                                           "(one line lists them; nothing is deleted, nothing else is touched).")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def validate(self) -> "TrainConfig":
        """Collect every problem, then raise once: each key against its own facts (field_problems), then the
        rules between keys and the text keys' own rules."""
        p = self.field_problems()
        if self.data_cache_dir is not None and not self.data_cache_dir.strip():
            p.append("data_cache_dir: empty; name a directory, auto, or null (keep no cache)")
        elif argcheck.path_problem(self.data_cache_dir):
            p.append(f"data_cache_dir: {argcheck.path_problem(self.data_cache_dir)}")
        if self.eval_sample_generations and self.distributed_strategy in SHARDED_STRATEGIES:
            p.append(f"eval_sample_generations: generating needs the whole weights on one process, which "
                     f"distributed_strategy {self.distributed_strategy} shards; set it to 0 (or use ddp / "
                     "deepspeed_zero2)")
        if self.packing and not self.padding_free:
            p.append("packing: needs padding_free: true (packed examples are separated by restarting position ids)")
        if self.quantization_bit and self.use_dora:
            p.append("use_dora: not supported together with quantization_bit")
        if isinstance(self.lora_target_modules, list) and not self.lora_target_modules:
            p.append("lora_target_modules: empty; name at least one module (e.g. q_proj,v_proj) or use all-linear")
        if isinstance(self.lora_target_modules, list) and any(not m.strip() for m in self.lora_target_modules):
            p.append(f"lora_target_modules: an empty module name in {self.lora_target_modules}")
        if self.dataset == []:
            p.append("dataset: an empty list; name at least one data file or directory")
        run = Path(self.run_name)
        if not self.run_name.strip() or run.is_absolute() or ".." in run.parts or run == Path("."):
            p.append(f"run_name: {self.run_name!r} must name a directory inside output_dir "
                     "(not empty, '.', absolute, or with '..')")
        elif argcheck.run_name_problem(self.run_name):  # a URL segment in the UI, a word in logs: no '?', ',', newline
            p.append(f"run_name: {argcheck.run_name_problem(self.run_name)}")
        if p:
            raise ConfigError(p)
        return self

    def field_problems(self) -> list[str]:
        """Each key against its facts: its bounds (the one-sided ones first, then the intervals), its choices, and,
        for a path, argcheck.path_problem (empty, a NUL, a name over 255 bytes); each group in field order (the order
        validate has always listed them in)."""
        ignored = {"num_train_epochs"} if self.max_steps > 0 else set()  # (its help: ignored when max_steps > 0)
        facts = [(f.name, getattr(self, f.name), f.metadata) for f in dataclasses.fields(self) if f.name not in ignored]
        p = []
        for interval in (False, True):
            for key, value, m in facts:
                b = m["bounds"]
                if b and (b.high is not None) == interval and value is not None and not b.holds(value):
                    p.append(f"{key}: must be {b}{f' (or null {b.null})' if b.null else ''}, got {value}")
        for key, value, m in facts:
            if m["choices"] and value not in m["choices"] and not (isinstance(value, list) and takes_list(key)):
                p.append(f"{key}: {value!r} is not one of {', '.join(value_text(c) for c in m['choices'])}"
                         + (" (or a list)" if takes_list(key) else ""))
        for key, value, m in facts:
            problem = argcheck.path_problem(value) if m["path"] and key not in OWN_PATH_RULES else None
            if problem:
                null = problem == argcheck.EMPTY_PATH and type(None) in _members(key)
                p.append(f"{key}: {problem}" + (", or null for none" if null else ""))
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- the field facts, for the CLI, the UI and the README


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TYPE_WORDS = {str: "text", int: "integer", float: "number", bool: "true | false"}


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(TrainConfig)


def _members(key: str) -> tuple:
    """The types a key's annotation names (int | None: (int, NoneType))."""
    hint = _hints()[key]
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def takes_list(key: str) -> bool:
    return any(typing.get_origin(m) is list for m in _members(key))


def choices(key: str) -> tuple:
    """The closed set of values a key takes (of its single value, where it also takes a list); () for any."""
    return FIELDS[key].metadata["choices"]


def path_keys() -> tuple[str, ...]:
    return tuple(k for k, f in FIELDS.items() if f.metadata["path"])


def default(key: str):
    f = FIELDS[key]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def value_text(value) -> str:
    """A value as YAML and key=value write it (null, true, a, b), as the UI's form and the README show it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)  # "a, b": a list (_coerce splits it)
    return str(value)


def accepts(key: str) -> str:
    """What a key takes, in words: its choices, or its type and bounds ("integer > 0", "path or list of paths")."""
    m, members = FIELDS[key].metadata, _members(key)
    if m["choices"]:
        words = " | ".join(value_text(c) for c in m["choices"])
        return f"a list of names, or {words}" if takes_list(key) else words
    single = next(t for t in members if t is not type(None) and typing.get_origin(t) is not list)
    kind = (m["path"] if isinstance(m["path"], str) else "path") if m["path"] else TYPE_WORDS[single]
    text = f"{kind} or list of {kind}s" if takes_list(key) else kind
    text += f" {m['bounds']}" if m["bounds"] else ""
    return text + (", or null" if type(None) in members else "")


# ---------------------------------------------------------------- loading


NULL_WORDS = ("null", "none", "~")
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
INT_LIMIT = 2**63  # every integer key fits an int64 (torch's seeds and sizes)


def _text_list(text: str) -> list:
    """'a,b', '[a, b]' or a JSON list, from the command line (or a YAML string)."""
    t = text.strip()
    if t.startswith("[") or t.endswith("]"):
        if not (t.startswith("[") and t.endswith("]")):
            raise ValueError(f"expected a list like [a, b] or a,b; the brackets of {text!r} do not match")
        try:
            items = json.loads(t)
        except (ValueError, RecursionError):
            items = [i.strip().strip("'\"") for i in t[1:-1].split(",")]
        if not isinstance(items, list):
            raise ValueError(f"expected a list, got {text!r}")
        return [i.strip() if isinstance(i, str) else i for i in items] if t[1:-1].strip() else []
    return [i.strip() for i in t.split(",")]


def _union_order(value, members: list) -> list:
    """The members of a union to try, in order. Text: the narrowest reading first and text itself last
    ('true' is a bool for bool | str, 'all-linear' stays text, 'a,b' is a list); a value of one of the
    member types (a YAML list, a Python number): that member first."""
    if isinstance(value, str):
        rank = {bool: 0, int: 1, float: 2, list: 3, str: 4}
        t = value.strip()
        bracketed = t.startswith("[") or t.endswith("]")
        lists = [m for m in members if typing.get_origin(m) is list]
        if bracketed and lists:
            return lists  # '[a' is a broken list, not the text '[a'
        listy = "," in t
        return sorted((m for m in members if (typing.get_origin(m) or m) is not list or listy),
                      key=lambda m: rank.get(typing.get_origin(m) or m, 5))
    return sorted(members, key=lambda m: 0 if (typing.get_origin(m) or m) is type(value) else 1)


def _coerce(key: str, value, hint):
    """Convert a value to the field's type, or raise ValueError. Text (a key=value override, a YAML scalar) is
    read by the key's type, never as YAML: text keys keep it literally ('1.10', '010', 'on', 'null')."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in NULL_WORDS)):
            return None
        errors = []
        for arg in _union_order(value, [a for a in args if a is not type(None)]):
            try:
                return _coerce(key, value, arg)
            except ValueError as e:
                errors.append(str(e))
        if not errors:
            raise ValueError(f"unexpected value {value!r}")
        raise ValueError(errors[-1] if isinstance(value, str) else errors[0])
    if value is None:
        raise ValueError("missing value (null); give one, or leave the key out for its default")
    if origin is list:
        if isinstance(value, str):
            value = _text_list(value)
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        return [_coerce(key, v, typing.get_args(hint)[0]) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected an integer, got {value!r}")
        number = value
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                try:  # '1e3'
                    number = float(value.strip())
                except ValueError:
                    raise ValueError(f"expected an integer, got {value!r}") from None
        if isinstance(number, float):
            if not (math.isfinite(number) and number.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            number = int(number)
        if not -INT_LIMIT <= number < INT_LIMIT:
            raise ValueError(f"{value!r} is out of range (at most {INT_LIMIT - 1:.3g} in size)")
        return number
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value.strip() if isinstance(value, str) else value)  # also '1e-4'
        except (ValueError, OverflowError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, got {value!r}")
        text = value if isinstance(value, str) else str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes the terminal could not decode, or a lone surrogate
            raise ValueError(f"{text!r} is not valid Unicode text") from None
        return text
    raise ValueError(f"unsupported type {hint}")


def parse_overrides(items: list[str]) -> dict:
    """key=value items -> {key: value text}. The text is read later by the key's type (build_config)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError([f"{item}: overrides are key=value (e.g. learning_rate=1e-4)"])
        key, _, raw = item.partition("=")
        if not key.strip():
            raise ConfigError([f"{item}: no key before '='; overrides are key=value (e.g. learning_rate=1e-4)"])
        out[key.strip()] = raw
    return out


# Names other trainers use for our keys (too far from ours for a spelling match).
KEY_ALIASES = {"lr": "learning_rate", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
               "model": "model_name_or_path", "max_length": "cutoff_len", "max_seq_length": "cutoff_len",
               "rank": "lora_rank", "alpha": "lora_alpha", "target_modules": "lora_target_modules"}


def build_config(raw: dict, source: str = "config", override_keys=()) -> TrainConfig:
    """override_keys: keys of raw that came from key=value overrides (named as such in errors)."""
    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    problems, values = [], {}
    for key, value in raw.items():
        if key not in hints:
            close = [KEY_ALIASES[key]] if key in KEY_ALIASES else difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            where = f"override {key}=..." if key in override_keys else source
            problems.append(f"{key}: unknown key in {where}{hint}")
            continue
        try:
            values[key] = _coerce(key, value, hints[key])
        except ValueError as e:
            problems.append(f"{key}: {e}")
    if problems:
        raise ConfigError(problems)
    targets = values.get("lora_target_modules")
    if isinstance(targets, str) and targets.strip() and targets not in TARGET_WORDS:
        values["lora_target_modules"] = [targets.strip()]  # one module name: a list of one
    return TrainConfig(**values).validate()


YAML_MAX_DEPTH, YAML_MAX_NODES = 20, 100_000  # a config is flat; this bounds aliases that expand ("billion laughs")


def _yaml_value(node, budget: list[int], depth: int = 0):
    """A YAML node as plain data, scalars as their text (read later by the key's type); null stays None."""
    budget[0] -= 1
    if budget[0] < 0 or depth > YAML_MAX_DEPTH:
        raise ValueError(f"nested deeper than {YAML_MAX_DEPTH} levels or larger than {YAML_MAX_NODES} values")
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == "tag:yaml.org,2002:null" else node.value
    if isinstance(node, yaml.SequenceNode):
        return [_yaml_value(n, budget, depth + 1) for n in node.value]
    return {_yaml_value(k, budget, depth + 1): _yaml_value(v, budget, depth + 1) for k, v in node.value}


def read_yaml_config(path: Path, text: str) -> dict:
    """The top-level mapping of a YAML config: keys must be names, each given once; values keep their text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}{where}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise UserError(f"{path}: expected a mapping of key: value")
    raw, problems = {}, []
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "(a list or mapping)"
            problems.append(f"{path}:{line}: {name}: a config key must be a name like learning_rate")
            continue
        if key_node.value in raw:
            problems.append(f"{path}:{line}: {key_node.value}: given twice; keep one")
            continue
        try:
            raw[key_node.value] = _yaml_value(value_node, [YAML_MAX_NODES])
        except (ValueError, RecursionError) as e:
            problems.append(f"{path}:{line}: {key_node.value}: "
                            f"{e if isinstance(e, ValueError) else 'nested too deeply'}")
    if problems:
        raise ConfigError(problems)
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    raw: dict = {}
    if path is not None:
        if not str(path).strip():
            raise UserError("config: empty path (an unset variable?); pass a YAML config file")
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: config file not found")
        if path.is_dir():
            raise UserError(f"{path}: is a directory; pass a YAML config file (e.g. sft/configs/lora_config.yaml)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file; pass a YAML config file") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
        raw = read_yaml_config(path, text)
    overridden = parse_overrides(overrides or [])
    raw.update(overridden)
    return build_config(raw, str(path) if path else "overrides", override_keys=set(overridden))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def save_config(cfg: TrainConfig, path: Path, note: str = "") -> None:
    """note: written as a YAML comment at the top (e.g. the settings a resume changed)."""
    header = "".join(f"# {line}\n" for line in note.splitlines())
    write_text(path, header + dump_config(cfg))


def describe() -> str:
    """The README's config reference: every key, its default, what it takes and what it means (the field facts)."""
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731  ("a | b" in a cell is not a table column)
    rows = ["| key | default | takes | meaning |", "|---|---|---|---|"]
    for key, f in FIELDS.items():
        rows.append(f"| `{key}` | `{value_text(default(key))}` | {cell(accepts(key))} | {cell(f.metadata['help'])} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """The README's text with its config table (from its header row to the first line after it that is not a
    table row) replaced by describe()."""
    lines = readme.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("| key | default |")), None)
    if start is None:
        raise UserError("no config table (a line starting '| key | default |') to replace")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[:start] + describe().split("\n") + lines[end:])


if __name__ == "__main__":  # python -m qwen_sft.config --markdown | --readme README.md
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qwen_sft.config", description="The config reference table.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the table (Markdown)")
    what.add_argument(
        "--readme", metavar="FILE", help="replace the config table in FILE (README.md) by the current one"
    )
    args = parser.parse_args()
    if args.markdown:
        print(describe())
    else:
        write_text(Path(args.readme), with_table(Path(args.readme).read_text(encoding="utf-8")))
