"""merge / validate / the merge CLI on the tiny Qwen3 stand-in with a real (random, non-zero) LoRA adapter."""

import argparse
import errno
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from qwen_sft import merge as merge_mod
from qwen_sft.assets import qwen3_tokenizer_dir
from qwen_sft.config import ALL_PROJECTIONS
from qwen_sft.errors import UserError
from qwen_sft.merge import add_merge_args, merge, run_merge, validate
from qwen_sft.model import build_tiny_model, load_peft
from qwen_sft.testing import build_tiny_adapter

REPO = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]
QUICK = dict(prompts=["Hello!", "What is 2 + 2?"], max_new_tokens=4, verbose=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    return build_tiny_adapter(tiny, tmp_path_factory.mktemp("run") / "lora_adapters", seed=1)


@pytest.fixture(scope="module")
def merged(tiny, adapter, tmp_path_factory):
    return merge(None, adapter, tmp_path_factory.mktemp("merged") / "m32", dtype="float32")


@functools.lru_cache(maxsize=None)
def _prompt_ids():
    """The test prompt rendered by the Qwen3 tokenizer every directory here carries."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    return tok.apply_chat_template(PROMPT, add_generation_prompt=True, enable_thinking=False, return_dict=True,
                                   return_tensors="pt")["input_ids"]


def _peft_logits(base, adapter_dir, ids):
    from transformers import AutoModelForCausalLM

    model = load_peft(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), Path(adapter_dir))
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def _logits(model_dir, ids):
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()(input_ids=ids).logits


def _args(*argv):
    return add_merge_args(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


def corrupt_one_weight(model_dir, key="model.layers.0.self_attn.q_proj.weight", delta=1.0):
    """Add `delta` to one element of one tensor in the merged safetensors, in place."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(f, "pt") as h:
            if key not in h.keys():
                continue
        tensors = load_file(f)
        tensors[key][0, 0] += delta
        save_file(tensors, f, metadata={"format": "pt"})
        return
    raise KeyError(key)


def _siblings(path):
    return sorted(p.name for p in Path(path).parent.iterdir())


# ---------------------------------------------------------------- correctness


@pytest.mark.slow
def test_merged_float32_logits_equal_peft_logits(tiny, adapter, merged):
    ids = _prompt_ids()
    ref = _peft_logits(tiny, adapter, ids)
    base = _logits(tiny, ids)
    got = _logits(merged, ids)
    assert (base - ref).abs().max() > 0.1, "the adapter must change the outputs for this test to mean anything"
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_merged_dir_has_what_vllm_needs(merged, adapter):
    from transformers import AutoConfig, AutoTokenizer

    names = {p.name for p in merged.iterdir()}
    assert any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith(".bin") for n in names)
    expected = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "qwen_sft.json"}
    assert expected <= names
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # for transformers-4 readers
    assert config["tie_word_embeddings"] is True
    tok_config = json.loads((merged / "tokenizer_config.json").read_text())
    assert tok_config.get("chat_template") or (merged / "chat_template.jinja").is_file()
    gen = json.loads((merged / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643]
    assert AutoConfig.from_pretrained(merged).model_type == "qwen3"
    tok = AutoTokenizer.from_pretrained(merged)
    assert tok.chat_template == AutoTokenizer.from_pretrained(adapter).chat_template
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]) == [151645, 151643]
    meta = json.loads((merged / "qwen_sft.json").read_text())
    assert meta["enable_thinking"] is False and meta["merged_from"]["dtype"] == "float32"
    # Tied embeddings untouched by the adapter stay tied: lm_head is not stored separately.
    with safe_open(next(merged.glob("*.safetensors")), "pt") as h:
        assert "lm_head.weight" not in h.keys()
    assert oct(merged.stat().st_mode & 0o777) != oct(0o700)  # not left private like a mkdtemp dir


@pytest.mark.parametrize("kind", ["dora", "rslora"])
def test_dora_and_rslora_adapters_merge_exactly(tiny, tmp_path, kind):
    """The streaming merge uses PEFT's own per-module merge: DoRA's magnitude and rsLoRA's scale included."""
    adapter_dir = build_tiny_adapter(
        tiny, tmp_path / kind, seed=3, use_dora=kind == "dora", use_rslora=kind == "rslora"
    )
    out = merge(None, adapter_dir, tmp_path / "out", dtype="float32")
    ids = _prompt_ids()
    ref = _peft_logits(tiny, adapter_dir, ids)
    assert (ref - _logits(tiny, ids)).abs().max() > 0.1
    torch.testing.assert_close(_logits(out, ids), ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("kind", ["modules_to_save_embed", "lora_lm_head", "tied_lora_embed"])
def test_adapter_touching_tied_embeddings(tiny, tmp_path, kind):
    kw = {"modules_to_save_embed": dict(modules_to_save=["embed_tokens"]),
          "lora_lm_head": dict(target_modules=ALL_PROJECTIONS + ["lm_head"]),
          # PEFT ties the lm_head adapter to the embed_tokens one: merging into the shared tensor naively
          # would apply the delta twice.
          "tied_lora_embed": dict(target_modules=ALL_PROJECTIONS + ["embed_tokens"], ensure_weight_tying=True),
          }[kind]
    adapter_dir = build_tiny_adapter(tiny, tmp_path / kind, seed=2, **kw)
    out = merge(None, adapter_dir, tmp_path / "out", dtype="float32")
    config = json.loads((out / "config.json").read_text())
    with safe_open(next(out.glob("*.safetensors")), "pt") as h:
        keys = set(h.keys())
    if kind == "tied_lora_embed":
        assert config["tie_word_embeddings"] is True and "lm_head.weight" not in keys
    else:
        assert config["tie_word_embeddings"] is False
        assert {"lm_head.weight", "model.embed_tokens.weight"} <= keys
    ids = _prompt_ids()
    torch.testing.assert_close(_logits(out, ids), _peft_logits(tiny, adapter_dir, ids), atol=2e-5, rtol=0)


def test_sharded_output_loads(tiny, adapter, tmp_path):
    out = merge(str(tiny), adapter, tmp_path / "sharded", dtype="float32", max_shard_size="8MB")
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    ids = _prompt_ids()
    torch.testing.assert_close(_logits(out, ids), _peft_logits(tiny, adapter, ids), atol=1e-5, rtol=0)


def test_merge_streams_the_base_one_shard_at_a_time(tiny, adapter, tmp_path, monkeypatch):
    """No model is loaded: each output file holds one base shard's tensors, written before the next shard is read,
    and the merged directory keeps the base's shard files. (Peak RSS: bench/bench_merge.py.)"""
    from transformers import AutoModelForCausalLM, PreTrainedModel

    sharded = tmp_path / "base"
    AutoModelForCausalLM.from_pretrained(tiny).save_pretrained(sharded, max_shard_size="8MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny / name, sharded / name)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(index.values()))
    assert len(shards) >= 2

    def no_whole_model(*a, **kw):
        raise AssertionError("the merge loaded a whole model")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", no_whole_model)
    writes, real_save = [], merge_mod._save_shard
    monkeypatch.setattr(
        merge_mod, "_save_shard", lambda t, path: writes.append((path.name, set(t))) or real_save(t, path)
    )
    out = merge(str(sharded), adapter, tmp_path / "out", dtype="float32")
    assert [name for name, _ in writes] == shards
    assert all(keys == {k for k, v in index.items() if v == name} for name, keys in writes)
    assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"] == index
    monkeypatch.undo()
    ids = _prompt_ids()
    torch.testing.assert_close(_logits(out, ids), _peft_logits(tiny, adapter, ids), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_merged_tokenizer_config_reads_in_transformers_4(merged, adapter):
    # transformers 5 saves the special-token list as a list-valued extra_special_tokens, which transformers 4
    # (vLLM on it) reads as a dict: "'list' object has no attribute 'keys'" when the server loads the tokenizer.
    from transformers import AutoTokenizer

    tc = json.loads((merged / "tokenizer_config.json").read_text())
    assert not isinstance(tc.get("extra_special_tokens"), list)
    assert "<|im_end|>" in tc["additional_special_tokens"]
    # The added tokens as Qwen's published file lists them (transformers 5 leaves them out, and then parses the
    # whole tokenizer.json a second time on every load to find them).
    published = json.loads((qwen3_tokenizer_dir() / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert tc["added_tokens_decoder"] == published
    tok, ref = AutoTokenizer.from_pretrained(merged), AutoTokenizer.from_pretrained(adapter)
    assert tok.extra_special_tokens == ref.extra_special_tokens and tok.all_special_ids == ref.all_special_ids
    assert {str(i): str(t) for i, t in tok.added_tokens_decoder.items()} == {
        i: v["content"] for i, v in published.items()}
    text = "<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>\n\n"
    assert tok(text)["input_ids"] == ref(text)["input_ids"]


def _edit_adapter_weights(src, dst, edit):
    shutil.copytree(src, dst)
    f = dst / "adapter_model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["extra_layer", "missing_layer"])
def test_adapter_that_does_not_fit_the_base_is_refused(tiny, adapter, tmp_path, kind):
    # An adapter trained on a deeper model (weights for layer 2 of a 2-layer base) or on a shallower one (no
    # weights for layer 1): PEFT drops the first silently and warns only about the second, so the merge
    # wrote a partial adapter and validation, loading it the same way, passed.
    def edit(t):
        layer1 = [k for k in t if ".layers.1." in k]
        if kind == "extra_layer":
            t.update({k.replace(".layers.1.", ".layers.2."): t[k].clone() for k in layer1})
        else:
            for k in layer1:
                del t[k]

    bad = _edit_adapter_weights(adapter, tmp_path / "lora_adapters", edit)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not fit the base model") as e:
        merge(str(tiny), bad, out, dtype="float32")
    assert ("layers.2." if kind == "extra_layer" else "layers.1.") in str(e.value)
    assert not out.exists() and _siblings(out) == ["lora_adapters"]
    with pytest.raises(UserError, match="does not fit the base model"):
        validate(str(tiny), bad, tiny, **QUICK)

# ---------------------------------------------------------------- validate


@pytest.mark.slow
def test_validate_passes_then_fails_on_one_corrupted_weight(tiny, adapter, merged, tmp_path):
    good = validate(None, adapter, merged, **QUICK)
    assert good.ok, good.summary()
    assert good.dtype == "float32" and good.max_logit_diff < 1e-4
    assert all(p.tokens_match for p in good.prompts)
    assert all(p.stopped is None for p in good.prompts)  # a random model does not stop: reported, not failed
    assert "no <|im_end|> within 4 tokens" in good.summary()

    bad_dir = tmp_path / "bad"
    shutil.copytree(merged, bad_dir)
    corrupt_one_weight(bad_dir)
    bad = validate(str(tiny), adapter, bad_dir, **QUICK)
    assert not bad.ok
    assert any("max |logit diff|" in f for f in bad.failures)
    assert "validation FAILED" in bad.summary()


@pytest.mark.slow
def test_run_merge_validate_positional_defaults_bf16_and_test_prompt(tiny, adapter, tmp_path, monkeypatch, capsys):
    # `qwen-sft merge ADAPTER --validate --test_prompt P`: base from adapter_config.json, default dtype
    # (bfloat16, validated with its tolerance), default output sft/outputs/merged_models/{run}/.
    run_dir = tmp_path / "sft" / "outputs" / "training" / "myrun"
    shutil.copytree(adapter, run_dir / "lora_adapters")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(merge_mod, "DEFAULT_PROMPTS", ("Hello!",))
    rc = run_merge(_args("sft/outputs/training/myrun/lora_adapters", "--validate", "--validate_tokens", 4,
                         "--test_prompt", "Say hi.", "--max_new_tokens", 4))
    out = capsys.readouterr().out
    assert rc == 0, out
    target = tmp_path / "sft" / "outputs" / "merged_models" / "myrun"
    assert (target / "config.json").is_file()
    assert json.loads((target / "config.json").read_text())["dtype"] == "bfloat16"
    assert "validation PASSED" in out and "test prompt: Say hi." in out
    assert f"validation of {Path('sft/outputs/merged_models/myrun')} (bfloat16)" in out  # not the temp dir
    assert _siblings(target) == ["myrun"]


@pytest.mark.slow
def test_run_merge_validate_fails_on_corruption_and_writes_nothing(tiny, adapter, tmp_path, monkeypatch, capsys):
    real = merge_mod._write_merged

    def write_then_corrupt(tmp, *a, **kw):
        real(tmp, *a, **kw)
        corrupt_one_weight(tmp)

    monkeypatch.setattr(merge_mod, "_write_merged", write_then_corrupt)
    monkeypatch.setattr(merge_mod, "DEFAULT_PROMPTS", ("Hello!",))
    out = tmp_path / "out"
    rc = run_merge(_args("--lora_adapter", adapter, "--output_dir", out, "--dtype", "float32", "--validate",
                         "--validate_tokens", 2))
    assert rc == 1
    assert "validation FAILED" in capsys.readouterr().out
    assert not out.exists() and _siblings(out) == []


# ---------------------------------------------------------------- atomic output


@pytest.mark.slow
def test_interrupted_merge_leaves_nothing(adapter, tmp_path, monkeypatch):
    real_save = merge_mod._save_shard

    def save_then_interrupt(tensors, path):
        real_save(tensors, path)  # weights are on disk: the interrupt comes midway through the write
        assert path.is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_mod, "_save_shard", save_then_interrupt)
    out = tmp_path / "parent" / "out"
    with pytest.raises(KeyboardInterrupt):
        merge(None, adapter, out, dtype="float32")
    assert not out.exists() and _siblings(out) == []

    # With --overwrite, an interrupted merge keeps the previous output untouched.
    earlier_merge(out)
    with pytest.raises(KeyboardInterrupt):
        merge(None, adapter, out, dtype="float32", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt", "qwen_sft.json"] and _siblings(out) == ["out"]


def earlier_merge(out: Path) -> Path:
    """What --overwrite may replace: the output of an earlier merge (its qwen_sft.json names what it was merged
    from)."""
    out.mkdir(parents=True)
    (out / "qwen_sft.json").write_text(
        json.dumps({"merged_from": {"adapter": "a", "base_model": "b", "dtype": "float32"}})
    )
    (out / "previous.txt").write_text("keep me")
    return out


def test_full_disk_is_one_line_and_keeps_the_previous_output(adapter, tmp_path, monkeypatch, capsys):
    def disk_full(tensors, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge_mod, "_save_shard", disk_full)
    out = earlier_merge(tmp_path / "out")
    assert merge_mod.main(["--lora_adapter", str(adapter), "-o", str(out), "--overwrite"]) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"error: cannot write the merged model {out}: No space left on device"
    )
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt", "qwen_sft.json"] and _siblings(out) == ["out"]


def test_temporary_directory_of_a_killed_merge_is_named_and_kept(adapter, tmp_path, caplog):
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-k1ll3d"  # what a merge killed with SIGKILL leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    with caplog.at_level(logging.WARNING, logger="qwen_sft"):
        merge(None, adapter, out, dtype="float32")
    assert f"{stale} (0.00 GB) is left from an earlier merge that was killed" in caplog.text
    assert stale.is_dir() and (out / "config.json").is_file()


def test_existing_output_needs_overwrite(adapter, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("old")
    with pytest.raises(UserError, match="--overwrite"):
        merge(None, adapter, out, dtype="float32")
    assert (out / "previous.txt").read_text() == "old"
    assert merge_mod.main(["--lora_adapter", str(adapter), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    out = earlier_merge(tmp_path / "earlier")
    merge(None, adapter, out, dtype="float32", overwrite=True)
    assert not (out / "previous.txt").exists() and (out / "config.json").is_file()
    # the record the next --overwrite looks for
    assert merge_mod.merge_record(out) == {
        "adapter": str(adapter.resolve()),
        "base_model": str(merge_mod.adapter_base_model(adapter)),
        "dtype": "float32",
    }
    assert _siblings(out) == ["earlier", "out"]  # no temp or moved-aside directory left
    with pytest.raises(UserError, match="is not the output of an earlier merge"):  # a folder of the user's
        merge(None, adapter, tmp_path / "out", dtype="float32", overwrite=True)
    assert (tmp_path / "out" / "previous.txt").read_text() == "old"


def test_overwrite_replaces_only_an_earlier_merge(adapter, tmp_path, monkeypatch, capsys):
    """#23 item 4: `-o . --overwrite` deleted the user's files; `-o RUN_DIR --overwrite` of a live run deleted its
    checkpoints, config and lock, and the trainer carried on inside the merged model's directory."""
    from qwen_sft.runlock import hold

    monkeypatch.setattr(merge_mod, "_write_merged", lambda *a, **k: pytest.fail("the merge started"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.md").write_text("mine")
    monkeypatch.chdir(work)
    assert merge_mod.main([str(adapter), "-o", ".", "--overwrite"]) == 2
    assert capsys.readouterr().err == (f"error: {work} is not the output of an earlier merge (no qwen_sft.json naming "
                                       "what it was merged from); --overwrite replaces only that: choose another -o, "
                                       "or move that directory away yourself\n")
    run = tmp_path / "runs" / "live"
    run.mkdir(parents=True)
    (run / "checkpoint-2").mkdir()
    (run / "config.yaml").write_text("lora_rank: 8\n")
    (run / "qwen_sft.json").write_text(json.dumps({"merged_from": {}}))  # even with a record: it is live
    with hold(run):
        assert merge_mod.main([str(adapter), "-o", str(run), "--overwrite"]) == 2
        assert capsys.readouterr().err == (f"error: {run} is a run directory in use by a training run (pid "
                                           f"{os.getpid()} on host {os.uname().nodename}); --overwrite never replaces "
                                           "it: choose another -o\n")
    assert sorted(p.name for p in work.iterdir()) == ["notes.md"]
    assert sorted(p.name for p in run.iterdir()) == [".qwen-sft.lock", "checkpoint-2", "config.yaml", "qwen_sft.json"]


def test_a_run_that_starts_in_the_output_during_the_merge_keeps_it(adapter, tmp_path, monkeypatch):
    """The output is checked again just before the new one takes its place (a merge takes minutes)."""
    from qwen_sft.runlock import hold

    out = earlier_merge(tmp_path / "out")
    real = merge_mod._write_merged

    def write_then_a_run_starts(tmp, *a, **kw):
        real(tmp, *a, **kw)
        held.append(hold(out))
        held[-1].__enter__()

    held = []
    monkeypatch.setattr(merge_mod, "_write_merged", write_then_a_run_starts)
    try:
        with pytest.raises(UserError, match="is a run directory in use by a training run"):
            merge(None, adapter, out, dtype="float32", overwrite=True)
    finally:
        held[-1].__exit__(None, None, None)
    assert (out / "previous.txt").read_text() == "keep me" and _siblings(out) == ["out"]


@pytest.mark.slow
def test_an_output_name_of_255_bytes_merges(adapter, tmp_path):
    """#23 item 15: the temporary name `.{name}.tmp-XXXXXXXX` is longer than the output's: [Errno 36]."""
    out = tmp_path / ("m" * 200 + "é" * 27 + "x")  # 255 bytes, a two-byte character at the cut
    assert len(out.name.encode()) == 255
    merge(None, adapter, out, dtype="float32")
    merge(None, adapter, out, dtype="float32", overwrite=True)  # and the moved-aside old one's name too
    assert (out / "config.json").is_file() and _siblings(out) == [out.name]


def test_argument_errors(adapter, tmp_path):
    with pytest.raises(UserError, match="adapter directory not found"):
        merge(None, tmp_path / "missing", tmp_path / "o")
    with pytest.raises(UserError, match="no adapter_config.json"):
        merge(None, tmp_path, tmp_path / "o")
    pickled = tmp_path / "pickled"  # an adapter saved as a PyTorch pickle: never loaded (torch.load)
    pickled.mkdir()
    shutil.copy(adapter / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="only adapter_model.bin, a PyTorch pickle: qwen-sft loads safetensors only"):
        merge(None, pickled, tmp_path / "o")
    with pytest.raises(UserError, match="overlaps the adapter"):
        merge(None, adapter, adapter / "merged", overwrite=True)
    with pytest.raises(UserError, match="--dtype"):
        merge(None, adapter, tmp_path / "o", dtype="int8")
    with pytest.raises(UserError, match="two adapters"):
        run_merge(_args(adapter, "--lora_adapter", tmp_path))
    with pytest.raises(UserError, match="pass the adapter"):
        run_merge(_args("-o", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- script shims


@pytest.mark.slow
def test_merge_scripts_are_executable_and_answer_help(capsys):
    """merge_lora.sh and its merge_lora.py run as processes in tests/e2e/test_seed_scripts.py; quick_merge.py runs
    as one here, merge_lora.py's --help in this process."""
    from tests.cli import run_script

    merge_lora, quick_merge = REPO / "sft/scripts/merge_lora.py", REPO / "sft/scripts/quick_merge.py"
    assert os.access(merge_lora, os.X_OK) and os.access(quick_merge, os.X_OK)
    for help_ in (run_script(capsys, merge_lora, "--help"),
                  subprocess.run([sys.executable, str(quick_merge), "--help"], capture_output=True, text=True,
                                 timeout=120)):
        assert help_.returncode == 0 and "--lora_adapter" in help_.stdout and "ADAPTER" in help_.stdout


def test_merge_script_entry_point_ctrl_c_is_not_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_mod, "run_merge", interrupted)
    assert merge_mod.main(["some/lora_adapters", "-o", "out"]) == 130
    assert capsys.readouterr().err == "interrupted: nothing was written\n"
