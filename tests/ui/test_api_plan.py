"""POST /api/plan: the plan of the start form's config, for the panel beside it (#24)."""

from __future__ import annotations

import pytest

from tests.ui.conftest import make_workspace
from tests.ui.test_api import client


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws", with_model=True)


def post(c, **body):
    return c.post("/api/plan", json={"base": "sft/configs/tiny.yaml", "values": {}, **body})


@pytest.mark.slow
def test_plan_answers_with_peak_fit_time_breakdown_card_and_suggestions(ws):
    c = client(ws)
    r = post(c, gpu="RTX 4090")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["fits"] is True and p["card"]["key"] == "rtx4090" and p["suggestions"] == []
    assert p["peak_gib"] > 0 and p["tokens_per_s"] > 0 and set(p["breakdown"]) >= {
        "frozen_weights_gib", "lora_weights_gib", "lora_grads_gib", "optimizer_state_gib", "saved_activations_gib",
        "transient_gib", "cuda_workspace_margin_gib"}
    # Every figure in the words `qwen-sft plan` prints (plan/report.py), for the page's breakdown.
    assert set(p["breakdown_labels"]) == set(p["breakdown"])
    assert p["breakdown_labels"]["saved_activations_gib"] == [
        "saved activations", "kept from the forward: the checkpointed layer inputs"]
    assert p["model"]["name"] == str(ws / "models" / "tiny")  # read from the workspace, as train runs there
    assert p["wall_s"] is None and p["data"]["source"] is None  # the data is not encoded yet
    # The form's values are overrides, as for /api/configs/check: a smaller micro-batch, a smaller peak.
    smaller = post(c, gpu="rtx4090", values={"per_device_train_batch_size": "1"}).json()
    assert smaller["peak_gib"] < p["peak_gib"] and smaller["micro_batch"]["rows"] == 1
    # A card too small: does not fit, with the changes that would.
    tight = post(c, memory=0.5 + p["peak_gib"] - 0.1).json()
    assert tight["fits"] is False and tight["card"]["source"] == "--memory"
    assert tight["suggestions"] and all(s["peak_gib"] is None or s["peak_gib"] > 0 for s in tight["suggestions"])


def test_plan_refusals_name_the_field(ws):
    c = client(ws)
    r = post(c, values={"lora_rank": "0"})
    assert r.status_code == 400 and r.json()["fields"] == {"lora_rank": ["lora_rank: must be > 0, got 0"]}
    r = post(c, gpu="gtx-9000")
    assert r.status_code == 400 and "not a card plan knows" in r.json()["fields"]["gpu"][0]
    r = post(c, memory="lots")
    assert r.status_code == 400 and r.json()["fields"] == {"memory": ["a number of GiB > 0"]}
    r = post(c, gpu="h100", memory=80)
    assert r.status_code == 400 and "gpu" in r.json()["fields"]
    r = post(c, values={"dataset": "/etc/passwd"})
    assert r.status_code == 400 and "outside the workspace" in r.json()["fields"]["dataset"][0]
    r = post(c, gpus=0)
    assert r.status_code == 400 and r.json()["fields"] == {"gpus": ["a whole number >= 1"]}


@pytest.mark.slow
def test_the_page_and_the_api_agree(ws):
    """What newrun.js's plan panel posts ({base, values, gpu} or {base, values, memory}), and every field it reads
    of the answer; the cards it offers are the cards table's names."""
    import re
    from pathlib import Path

    from qwen_sft.plan import cards

    script = (Path(__file__).resolve().parents[2] / "src/qwen_sft/ui/static/newrun.js").read_text()
    offered = re.search(r"const PLAN_CARDS = \[(.*?)\];", script).group(1)
    names = re.findall(r'"([^"]+)"', offered)
    assert names and set(names) <= {c.key for c in cards.CARDS}
    c = client(ws)
    p = c.post(
        "/api/plan", json={"base": "sft/configs/tiny.yaml", "values": {"lora_rank": "8"}, "gpu": "rtx4090"}
    ).json()
    assert isinstance(p["peak_gib"], float) and p["fits"] is True and p["tokens_per_s"] > 0 and "wall_s" in p
    assert p["card"]["name"] == "NVIDIA GeForce RTX 4090 24GB" and p["card"]["memory_gib"] == 24
    assert p["breakdown"] and all(isinstance(v, (int, float)) for v in p["breakdown"].values())
    memory = p["peak_gib"] - 0.1 + 0.5  # the margin plus 0.1 GiB short
    tight = c.post("/api/plan", json={"base": "sft/configs/tiny.yaml", "values": {}, "memory": memory}).json()
    assert tight["card"]["memory_gib"] == memory and tight["fits"] is False
    s = tight["suggestions"][0]
    assert isinstance(s["change"], dict) and s["change"] and "peak_gib" in s  # suggestionText renders key=value
