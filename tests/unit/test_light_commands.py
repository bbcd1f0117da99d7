"""Commands that neither train nor generate start without torch (#25): `--help`, `prepare`, `cache ls / clean`, the
supervisor of a multi-GPU run, and the UI server's pages of runs, models, configs and ops. One subprocess: what a
process has imported is a fact about the whole process (the test process itself has torch long loaded)."""

import json
import subprocess
import sys
import textwrap

import pytest

from qwen_sft import launch

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from pathlib import Path

    from qwen_sft import cli, launch

    done = []

    def run(*argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = cli.main(list(argv))
            except SystemExit as e:  # --help
                code = e.code
        assert code == 0, (argv, code, out.getvalue())
        assert "torch" not in sys.modules, f"qwen-sft {' '.join(argv)} imported torch"
        done.append(argv[0])
        return out.getvalue()

    assert "eval" in run("--help") and "prepare" in run("prepare", "--help")
    run("prepare", "--input", "rows.jsonl", "--output", "out.jsonl")
    run("prepare", "--format", "sample", "--num_samples", "5", "--output", "samples.jsonl")
    run("cache", "ls", "--dir", "cache")
    run("cache", "clean", "--dir", "cache")

    # The eval's text metrics, its report and the template fidelity check are torch-free modules.
    from qwen_sft.data import fidelity
    from qwen_sft.evaluation import metrics, report
    assert "torch" not in sys.modules, "the eval's metrics, report or fidelity module imported torch"

    # The supervisor of a multi-GPU run: two GPUs the driver shows, torchrun replaced by a recorder.
    launch.NVIDIA_GPUS = Path("gpus")
    launched = []
    launch.supervise = lambda cmd, **_: launched.append(cmd) or 0
    run("train", "run_name=r", "dataset=out.jsonl")
    assert launched and "--nproc_per_node=2" in launched[0], launched

    # The UI server: its app, and the requests of its first page and of a run's page.
    from starlette.testclient import TestClient
    from qwen_sft.ui import server
    from qwen_sft.ui.application import create_app
    from qwen_sft.ui.context import Settings

    ws = Path("ws").resolve()
    settings = Settings(workspace=ws, host="127.0.0.1", port=80, token=None,
                        allowed_hosts=server.allowed_hosts("127.0.0.1", 80, []), allow_remote_code=False)
    client = TestClient(create_app(settings), base_url="http://127.0.0.1")
    for path in ("/", "/api/runs/list", "/api/runs/detail?run=runs/r1", "/api/models/list", "/api/configs/schema",
                 "/api/configs/bases", "/api/ops/status?run=runs/r1"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert "torch" not in sys.modules, f"GET {path} imported torch"
    models = client.get("/api/models/list").json()["models"]
    assert [m["id"] for m in models if m["kind"] == "adapter"] == ["runs/r1/lora_adapters"], models
    print(json.dumps({"done": done, "torch": "torch" in sys.modules}))
""")


def _workspace(ws):
    run = ws / "runs" / "r1"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-2" / "COMPLETE").write_text('{"step": 2}')
    (run / "metrics.json").write_text('{"train_loss": 1.0}')
    (run / "live.jsonl").write_text(json.dumps({"status": "finished", "run_name": "r1", "step": 2}) + "\n")
    adapter = run / "lora_adapters"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen3-4B"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")


def test_light_commands_and_the_ui_server_do_not_import_torch(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for gpu in ("0000:01:00.0", "0000:02:00.0"):
        (tmp_path / "gpus" / gpu).mkdir(parents=True)
    _workspace(tmp_path / "ws")
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"done": ["--help", "prepare", "prepare", "prepare", "cache", "cache", "train"], "torch": False}


@pytest.mark.parametrize("visible, expected", [
    (None, 4), ("0,2", 2), ("3", 1), ("", 0), ("1,-1,2", 1), ("0,,1", 1), ("0,1,2,3,4,5", 4),
    ("GPU-8a5c2f1e-0000-0000-0000-000000000000", 1),
])
def test_visible_gpus_reads_the_driver_and_cuda_visible_devices(tmp_path, monkeypatch, visible, expected):
    for i in range(4):
        (tmp_path / f"0000:0{i}:00.0").mkdir()
    monkeypatch.setattr(launch, "NVIDIA_GPUS", tmp_path)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert launch.visible_gpus() == expected


def test_visible_gpus_without_an_nvidia_driver_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "NVIDIA_GPUS", tmp_path / "absent")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert launch.visible_gpus() is None
