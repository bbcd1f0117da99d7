"""`qwen-sft eval` as a user runs it, on the tiny model and a tiny adapter."""

import json

import pytest

from qwen_sft import cli as cli_mod
from qwen_sft.testing import build_tiny_adapter
from tests.cli import run_cli
from tests.tiny import tiny_model_dir

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "中国的首都是哪里？"},
            {"role": "assistant", "content": "中国的首都是北京。"},
        ]
    },
    {"instruction": "Say hi", "output": "Hi!"},
]




@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    adapter = build_tiny_adapter(tiny_model_dir(), root / "training/run1/lora_adapters", seed=3, scale=0.5)
    data = root / "heldout.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return root, adapter, data


def test_eval_writes_jsonl_markdown_json_and_fails_a_threshold(setup, tmp_path, capsys):
    root, adapter, data = setup
    out = run_cli(capsys, "eval", adapter, "--data", data, "--n", 2, "--max_new_tokens", 6, "--out", tmp_path / "ev",
              "--fail_below", "stop_rate=0.9", "language_match=0", "--fail_above", "unexpected_reasoning=1", cwd=root)
    assert out.returncode == 1, out.stderr
    assert "FAIL: stop_rate 0 < 0.9 (--fail_below)" in out.stderr  # a random model never stops in 6 tokens
    assert "language_match" not in out.stderr.split("FAIL", 1)[1]
    assert "template fidelity: 2 rows OK" in out.stdout and "stop_rate" in out.stdout and "Traceback" not in out.stderr
    rows = [json.loads(line) for line in (tmp_path / "ev/generations.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == [f"{data}:1", f"{data}:2"]
    for r in rows:
        for role in ("base", "tuned"):
            assert r[role]["new_tokens"] == 6 and r[role]["stopped"] is False
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert metrics["model"] == str(adapter) and metrics["base_model"] == str(tiny_model_dir())
    assert metrics["rows"] == 2 and metrics["rows_in_data"] == 3 and metrics["enable_thinking"] is False
    assert metrics["failed"] == ["stop_rate 0 < 0.9 (--fail_below)"]
    for key in ("tuned", "base"):  # trained tokens: 7 + <|im_end|>, 5 + <|im_end|>
        m = metrics[key]
        assert m["stop_rate"] == 0.0 and m["counts"]["stop_rate"] == [0, 2] and m["missing_reasoning"] is None
        assert m["loss"] > 0 and m["trained_tokens"] == 8 + 6 and m["bleu_tokenize"] == "zh"
        assert 0 <= m["rouge_l"] <= 1 and 0 <= m["bleu"] <= 100
    assert metrics["tuned"]["loss"] != metrics["base"]["loss"]
    md = (tmp_path / "ev/report.md").read_text()
    assert md.startswith(f"# Evaluation of `{adapter}`") and "(the first 2 of 3)" in md
    assert "| stop_rate | 0.000 (0/2) | 0.000 (0/2) | >= 0.9 FAIL |" in md and "中国的首都是北京。" in md


def test_eval_passes_without_failing_thresholds_and_default_out_dir(setup, monkeypatch, capsys):
    root, adapter, data = setup
    monkeypatch.chdir(root)
    rc = cli_mod.main(["eval", str(adapter), "--data", str(data), "--n", "1", "--max_new_tokens", "4",
                       "--fail_below", "bleu=0"])
    assert rc == 0
    out = root / "sft/outputs/eval/run1"
    assert {p.name for p in out.iterdir()} == {"generations.jsonl", "report.md", "metrics.json"}
    assert "report: sft/outputs/eval/run1/report.md" in capsys.readouterr().out


def test_fidelity_only_and_bad_input(setup, tmp_path, capsys):
    root, adapter, data = setup
    out = run_cli(capsys, "eval", adapter, "--data", data, "--fidelity_only", cwd=root)
    assert out.returncode == 0 and "template fidelity: 3 rows OK" in out.stdout, out.stderr
    # a saved template that does not write the empty think block into the generation prompt
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in adapter.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((broken / "tokenizer_config.json").read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("{{- '<think>\\n\\n</think>\\n\\n' }}", "")
    (broken / "tokenizer_config.json").write_text(json.dumps(cfg))
    out = run_cli(capsys, "eval", broken, "--data", data, "--fidelity_only", cwd=root)
    assert out.returncode == 2 and "template fidelity check failed" in out.stderr and "Traceback" not in out.stderr
    # without that block the template reads as always-thinking, which cannot serve this thinking-off adapter
    assert "enable_thinking: false, but" in out.stderr and "always-thinking (Thinking-2507 kind" in out.stderr
    # the mode contradicts the adapter's qwen_sft.json (in-process from here on: faster)
    capsys.readouterr()
    assert cli_mod.main(["eval", str(adapter), "--data", str(data), "--fidelity_only", "--enable_thinking"]) == 2
    assert "trained with enable_thinking=False" in capsys.readouterr().err
    assert cli_mod.main(["eval", str(adapter), "--data", str(data), "--fail_below", "unexpected_reasoning=0.1"]) == 2
    assert "use --fail_above" in capsys.readouterr().err
