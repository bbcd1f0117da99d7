"""What depends on the number of processes and on `distributed_strategy` (docs/multi_gpu.md).

The launcher is torchrun for every strategy (launch.py); the strategy is an accelerate plugin built
here from the shipped settings files:

    ddp              accelerate's DistributedDataParallel (CPU gloo or GPU NCCL); no file
    fsdp             sft/configs/accelerate/fsdp.yaml (its fsdp_config section)
    deepspeed_zero2  sft/configs/deepspeed/zero2.json
    deepspeed_zero3  sft/configs/deepspeed/zero3.json

fsdp and deepspeed need CUDA GPUs: accelerate runs CPU processes with DDP only. Only ddp is tested
here (CPU, gloo); the fsdp / deepspeed code paths have not been run (see docs/multi_gpu.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from .assets import CONFIG_DIR
from .errors import UserError

STRATEGY_FILES = {"fsdp": "accelerate/fsdp.yaml", "deepspeed_zero2": "deepspeed/zero2.json",
                  "deepspeed_zero3": "deepspeed/zero3.json"}
# accelerate config file keys (fsdp_config) -> FullyShardedDataParallelPlugin arguments, where not just "fsdp_" dropped.
_FSDP_RENAMES = {"fsdp_version": "fsdp_version", "fsdp_offload_params": "cpu_offload",
                 "fsdp_transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap"}


def strategy_file(strategy: str) -> Path:
    # The project's own copy first (run from the repo root, as the seed's scripts are); then the checkout
    # the package was installed from (editable installs).
    local = Path("sft") / "configs" / STRATEGY_FILES[strategy]
    path = local if local.exists() else CONFIG_DIR / STRATEGY_FILES[strategy]
    if not path.exists():
        raise UserError(f"distributed_strategy {strategy}: settings file {path} not found")
    return path


def fsdp_plugin_kwargs(path: Path) -> dict:
    fsdp = yaml.safe_load(path.read_text())["fsdp_config"]
    return {_FSDP_RENAMES.get(k, k.removeprefix("fsdp_")): v for k, v in fsdp.items()}


def deepspeed_config(path: Path, cfg) -> dict:
    """The shipped JSON with our loop's values in place of its "auto" entries."""
    ds = json.loads(path.read_text())
    ds.update(train_micro_batch_size_per_gpu=cfg.per_device_train_batch_size,
              gradient_accumulation_steps=cfg.gradient_accumulation_steps, gradient_clipping=cfg.max_grad_norm)
    return ds


def make_accelerator(cfg):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    strategy = cfg.distributed_strategy
    if strategy == "ddp":
        return Accelerator(cpu=not torch.cuda.is_available())
    if not torch.cuda.is_available():
        raise UserError(f"distributed_strategy {strategy}: needs CUDA GPUs (accelerate runs CPU processes with DDP "
                        "only); use distributed_strategy ddp")
    if strategy == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(**fsdp_plugin_kwargs(strategy_file(strategy)))
        accelerator, expected = Accelerator(fsdp_plugin=plugin), DistributedType.FSDP
    else:
        from accelerate import DeepSpeedPlugin
        from accelerate.utils import is_deepspeed_available

        if not is_deepspeed_available():
            raise UserError(f"distributed_strategy {strategy}: DeepSpeed is not installed (pip install deepspeed)")
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(strategy_file(strategy), cfg))
        accelerator = Accelerator(deepspeed_plugin=plugin, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
        expected = DistributedType.DEEPSPEED
    if accelerator.distributed_type != expected:
        raise UserError(f"distributed_strategy {strategy}: accelerate set up {accelerator.distributed_type.value} "
                        f"instead of {expected.value} (FSDP needs 2 or more GPU processes: --nproc N)")
    return accelerator


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def wrap_model_and_optimizer(accelerator, module, make_optimizer):
    """Wrap model and optimizer. FSDP: each decoder layer and, apart, each LoRA matrix is a unit (PEFT's policy,
    as transformers' Trainer uses: the frozen bf16 base and the fp32 LoRA weights cannot share one flat
    parameter), and the optimizer is built on the wrapped parameters. DeepSpeed needs both in one call."""
    if is_fsdp(accelerator):
        from peft.utils.other import fsdp_auto_wrap_policy

        accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(module.model)
        module = accelerator.prepare(module)
        return module, accelerator.prepare(make_optimizer(module))
    return accelerator.prepare(module, make_optimizer(module))


def gathered_state_dict(accelerator, module) -> dict | None:
    """The PeftModel's full state dict where the weights are sharded (FSDP, ZeRO-3), on rank 0 ({} on the others).

    A collective: every rank must call it. None where every rank holds whole LoRA weights (DDP, ZeRO-2) and
    PEFT reads them from the model itself.
    """
    zero3 = is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3
    if not (is_fsdp(accelerator) or zero3):
        return None
    full = accelerator.get_state_dict(module) or {}
    return {k.removeprefix("model."): v for k, v in full.items()}  # CausalLMLoss.model is the PeftModel


def all_rng_states(accelerator) -> list[dict] | None:
    """Every rank's RNG state, on every rank (dropout differs per rank); None for a single process."""
    if accelerator.num_processes == 1:
        return None
    from .checkpoint import rng_state

    states = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(states, rng_state())
    return states


def check_resume(accelerator, resume_from: Path | None) -> None:
    """Every rank resumes from the same checkpoint (or none), and only where rank 0's checkpoint holds all the state.

    Called on every rank (a collective in multi-process runs)."""
    if accelerator.num_processes > 1:
        main = [str(resume_from)]
        torch.distributed.broadcast_object_list(main, src=0)
        if main[0] != str(resume_from):
            raise UserError(f"rank {accelerator.process_index} would resume from {resume_from}, rank 0 from {main[0]}: "
                            "output_dir must be one shared directory that every node sees")
    if resume_from is not None and (is_fsdp(accelerator) or is_deepspeed(accelerator)):
        raise UserError(f"resume_from_checkpoint: not supported with distributed_strategy fsdp / deepspeed yet: their "
                        f"optimizer state is sharded across ranks and {resume_from} holds rank 0's part only "
                        "(its adapter is complete). Start a new run, or train with distributed_strategy ddp.")
