"""The pages of #16 in headless Chromium (Debian's, driven by Playwright), on the tiny model: the data page and its
errors, a row token by token as `qwen-sft inspect --json` marks it, base vs tuned chat, merge and eval from a run.

The tuned model is a tiny model trained here for 30 steps to memorise two replies (as the demo does), so the tuned
pane's answer is the model's own, and it differs from the base's. QWEN_SFT_UI_SCREENSHOTS=DIR saves the
screenshots of docs/ui.md there.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_sft.config import build_config
from qwen_sft.data.formats import load_dataset
from tests.ui.conftest import UIServer, make_workspace
from tests.ui.test_browser import SHOTS

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

MEMO = [("What is the secret word?", "The secret word is pineapple."), ("Name the capital of Freedonia.", "Fredville "
                                                                                                          "is the "
                                                                                                          "capital.")]
BAD = [{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "q", "output": ""}, None, "not json",
       {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
       {"instruction": "Say bye.", "output": "Bye!"}]
SLOW = 240_000  # ms: a model load, a merge or an eval on 2 busy cores


def shot(page, name: str, selector: str | None = None, full: bool = False) -> None:
    """A screenshot for docs/ui.md: the viewport from the top, the whole page, or one element."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    path = f"{SHOTS}/ui-{name}.png"
    if selector:
        page.locator(selector).screenshot(path=path)
    else:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=path, full_page=full)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from qwen_sft.train import train

    ws = make_workspace(tmp_path_factory.mktemp("pages") / "ws", with_model=True)
    lines = ["" if r is None else r if isinstance(r, str) else json.dumps(r) for r in BAD]
    (ws / "data" / "bad.jsonl").write_text("\n".join(lines) + "\n")
    (ws / "data" / "memo.jsonl").write_text(
        "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in MEMO)
    )
    cfg = build_config(
        {
            "model_name_or_path": "models/tiny",
            "dataset": "data/memo.jsonl",
            "lora_rank": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_steps": 30,
            "warmup_ratio": 0.0,
            "lr_scheduler_type": "constant",
            "bf16": False,
            "gradient_checkpointing": False,
            "cutoff_len": 64,
            "output_dir": "runs",
            "run_name": "memo",
            "logging_steps": 5,
            "save_steps": 1000,
            "report_to": "none",
            "val_size": 0,
        }
    )
    with contextlib.chdir(ws):
        train(cfg)
    server = UIServer(ws)
    yield ws, server
    server.stop()



def test_data_page_errors_then_a_row_as_inspect_marks_it(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/data?files=data/bad.jsonl")
    page.wait_for_selector("#data-files label")
    page.click("#check")
    page.wait_for_selector("#verdict", timeout=SLOW)
    with contextlib.chdir(ws):
        problems = load_dataset(["data/bad.jsonl"], skip_invalid=True).invalid
    assert [p.split(": ")[0] for p in problems] == ["data/bad.jsonl:2", "data/bad.jsonl:4", "data/bad.jsonl:5"]
    expect(page.locator("#problems li")).to_have_text(problems)  # each error with its file:line
    expect(page.locator("#verdict")).to_contain_text("3 invalid row(s) stop training")
    expect(page.locator("#stat-kept")).to_have_text("2")
    expect(page.locator("#rows-table tr.bad-row")).to_have_count(3)
    shot(page, "data", full=True)

    # Each problem links to its row.
    page.click("#problems a >> nth=1")
    expect(page.locator("#row-error")).to_have_text(problems[1])
    expect(page.locator("#row-title")).to_have_text("data/bad.jsonl:4")

    # Upload a file into the workspace: it is listed and ticked.
    page.goto(server.url + "#/data")
    page.wait_for_selector("#data-files label")
    page.set_input_files(
        "#upload-file",
        files=[
            {
                "name": "up.jsonl",
                "mimeType": "application/octet-stream",
                "buffer": json.dumps({"instruction": "Up?", "output": "Up!"}).encode() + b"\n",
            }
        ],
    )
    page.click("#upload")
    expect(page.locator('#data-files label[data-path="data/up.jsonl"] input')).to_be_checked()
    assert (ws / "data" / "up.jsonl").read_text() == json.dumps({"instruction": "Up?", "output": "Up!"}) + "\n"

    # Search the rows of another file: case-insensitive, row numbers as they are found.
    page.goto(server.url + "#/data?files=data/train.jsonl")
    page.wait_for_selector("#rows-table tbody tr")
    page.fill("#search", "CASE 2")
    page.click("#search-go")
    expect(page.locator("#search-status")).to_have_text('5 row(s) of 24 hold "CASE 2"')
    expect(page.locator("#search-results a")).to_have_text([f"data/train.jsonl:{n}" for n in (3, 21, 22, 23, 24)])
    page.click("#search-results a >> nth=0")
    page.wait_for_selector('#page[data-rendered="data/train.jsonl:3"]')

    # A row token by token, with the run's tokenizer: trained tokens exactly where `qwen-sft inspect --json` has them.
    page.goto(server.url + "#/data/row?file=data/train.jsonl&index=2&tokenizer=models/tiny&cutoff_len=128")
    page.wait_for_selector('#page[data-rendered="data/train.jsonl:3"]')
    shown = page.eval_on_selector_all("#row-tokens .tok", "els => els.map(e => [Number(e.dataset.id), "
                                                          "e.dataset.trained === '1'])")
    out = subprocess.run(
        [sys.executable, "-m", "qwen_sft.cli", "inspect", "sft/configs/tiny.yaml", "--json", "--n", "3"],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[2])
    assert shown == [[i, label != -100] for i, label in zip(row["input_ids"], row["labels"])]
    assert page.get_attribute("#row-tokens .tok >> nth=0", "title") == "id 151644 · not trained"  # id on hover
    served = page.locator("#served-tokens .tok").count()
    assert [t[0] for t in shown[:served]] == page.eval_on_selector_all("#served-tokens .tok", "els => els.map(e => "
                                                                                              "Number(e.dataset.id))")
    expect(page.locator("#served-note")).to_contain_text(f"the row's first {served} tokens are exactly this prompt")
    shot(page, "row")

    # Thinking on re-renders: the (empty) think block of the reply is trained now.
    page.select_option("#row-thinking", "true")
    page.wait_for_selector("#row-tokens .tok.think.trained")
    assert page.locator("#row-tokens .tok.trained").count() == sum(label != -100 for label in row["labels"]) + 4
    # A template that cannot serve that mode: the CLI's one-line refusal.
    page.select_option("#row-tokenizer", "bundled:instruct-2507")
    expect(page.locator("#row-error")).to_have_text(
        "enable_thinking: true, but Qwen3 instruct-2507 (bundled tokenizer) is never-thinking (Instruct-2507 kind: no "
        "think block, reasoning ignored): it is never served a thinking prompt. Set enable_thinking: auto (or false), "
        "or "
        "fine-tune a Thinking-2507 or hybrid Qwen3 model to train reasoning")


def test_chat_base_and_tuned_side_by_side(site, page):
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/chat?left=models/tiny&right=runs/memo/lora_adapters")
    page.click("#load")
    page.wait_for_selector('#right-status[data-state="ready"]', timeout=SLOW)
    page.wait_for_selector('#left-status[data-state="ready"]', timeout=SLOW)
    expect(page.locator("#left-status")).to_contain_text("adapter disabled")  # the base: the same load, not a copy
    expect(page.locator("#temperature")).to_have_value("0.6")  # the model's generation_config
    page.check("#greedy")
    page.fill("#max_new_tokens", "16")
    for n, (question, answer) in enumerate(MEMO, 1):
        page.fill("#prompt", question)
        page.click("#send")
        page.wait_for_selector(f'#right-reply-{n}[data-done="1"]', timeout=SLOW)
        page.wait_for_selector(f'#left-reply-{n}[data-done="1"]', timeout=SLOW)
        expect(page.locator(f"#right-reply-{n} .answer")).to_have_text(answer)  # the tuned model's own reply
        assert page.text_content(f"#left-reply-{n} .answer") != answer
    expect(page.locator("#right-reply-2 .reply-foot")).to_contain_text("ended its turn")
    shot(page, "chat")


def test_chat_the_second_pane_says_it_waits_for_the_first(site, page):
    """Base and tuned from one worker answer one after the other: the pane whose turn is second says so, with the
    seconds it has waited, until its first token (on a CPU the first reply can take a minute or more)."""
    from playwright.sync_api import expect

    ws, server = site
    page.goto(server.url + "#/chat?left=models/tiny&right=runs/memo/lora_adapters")
    page.click("#load")
    page.wait_for_selector('#right-status[data-state="ready"]', timeout=SLOW)
    page.wait_for_selector('#left-status[data-state="ready"]', timeout=SLOW)
    page.check("#greedy")
    page.fill("#max_new_tokens", "400")  # the base's reply: long (a random model seldom ends its turn)
    page.fill("#prompt", "Tell me a long story.")
    page.click("#send")
    # The page sends the right pane's request once the left one has its place: the left is answered first. (Was: both
    # at once, and whichever reached the server second waited; when that was the base's long reply, the tuned one's
    # 11 tokens could finish before the base's request arrived, and no pane ever waited: a flaky failure in CI.)
    queued = page.wait_for_selector('.msg-assistant[data-waiting="queued"]', timeout=SLOW)
    side, other = "right", "left"
    assert queued.get_attribute("id") == "right-reply-1"
    assert re.fullmatch(
        rf"waiting: the same model process is answering the {other} pane first \(one reply at a time; "
        r"on a "
        r"CPU that can take a minute or more\) · \d+ s",
        queued.query_selector(".waiting").text_content(),
    )
    expect(page.locator(f'#{other}-reply-1 .waiting')).to_be_hidden()  # the first one generates meanwhile
    page.wait_for_selector(f'#{side}-reply-1[data-done="1"]', timeout=SLOW)
    page.wait_for_selector(f'#{other}-reply-1[data-done="1"]', timeout=SLOW)
    expect(page.locator(f"#{side}-reply-1 .waiting")).to_be_hidden()
    expect(page.locator(f"#{side}-reply-1 .reply-foot")).to_contain_text("waited ")
    expect(page.locator(f"#{side}-reply-1 .reply-foot")).to_contain_text(f" s for the {other} pane's reply first")
    expect(page.locator(f"#{other}-reply-1 .reply-foot")).not_to_contain_text("waited")


def test_merge_with_validation_and_eval_from_the_run_page(site, page):
    """The page's merge and eval, and what /api/ops answers about them (the jobs run once, for both)."""
    from playwright.sync_api import expect

    from qwen_sft.ui import ops

    ws, server = site
    api = server.url + "api/ops/"

    def status() -> dict:
        return page.request.get(api + "status?run=runs/memo").json()

    page.goto(server.url + "#/run/runs/memo")
    page.wait_for_selector("#ops:not([hidden])")
    page.select_option("#merge-dtype", "float32")
    with page.expect_response("**/api/ops/merge") as started:
        page.click("#merge")
    assert started.value.ok and started.value.json()["owner"] == "runs/memo" and started.value.json()["kind"] == "merge"
    busy = page.request.post(api + "merge", data={"run": "runs/memo", "dtype": "float32"})
    assert busy.status == 409  # one at a time
    expect(page.locator("#validation-verdict")).to_have_text("PASSED", timeout=SLOW)
    expect(page.locator("#validation-report")).to_contain_text("validation of runs/memo/merged (float32)")
    expect(page.locator("#merge-job")).to_have_attribute("data-status", "finished")
    assert (ws / "runs/memo/merged/config.json").is_file()
    merged = status()["merged"]
    assert merged["exists"] and merged["path"] == "runs/memo/merged"
    v = merged["validation"]
    assert v["passed"] is True and v["lines"][0].startswith("validation of runs/memo/merged (float32)")
    assert v["lines"][-1] == "validation PASSED" and len([t for t in v["lines"] if "max |logit diff|" in t]) == 4
    again = page.request.post(api + "merge", data={"run": "runs/memo", "dtype": "float32"})
    assert again.status == 409 and "tick 'replace'" in again.json()["error"]

    page.select_option("#eval-model", "merged")
    # memo held no rows out (val_size 0): the default is a file it did not train on; its own data gets a warning.
    expect(page.locator("#eval-data")).not_to_have_value("data/memo.jsonl")
    expect(page.locator("#eval-data-warning")).to_be_hidden()
    page.select_option("#eval-data", "data/memo.jsonl")
    expect(page.locator("#eval-data-warning")).to_contain_text("data/memo.jsonl is this run's training data")
    page.fill("#eval-n", "2")
    page.fill("#eval-max-new-tokens", "16")
    page.click("#evaluate")
    page.wait_for_selector("#eval-table", timeout=SLOW)
    expect(page.locator("#eval-generations .gen-tuned")).to_have_text([a for _, a in MEMO])
    for base in page.locator("#eval-generations .gen-base").all_text_contents():
        assert base not in [a for _, a in MEMO]
    expect(page.locator('#eval-table tr[data-key="loss"] td')).to_have_count(3)
    shot(page, "merge-eval", selector="#ops")

    result = status()["eval"]["result"]
    metrics = json.loads((ws / "runs/memo/eval/metrics.json").read_text())
    assert result["metrics"] == metrics and metrics["model"] == "runs/memo/merged" and metrics["rows"] == 2
    assert [row["key"] for row in result["table"]] == list(ops.EVAL_KEYS)
    assert result["table"][0] == {"key": "loss", "base": metrics["base"]["loss"], "tuned": metrics["tuned"]["loss"]}
    gens = page.request.get(api + "generations?run=runs/memo").json()["rows"]
    lines = [json.loads(t) for t in (ws / "runs/memo/eval/generations.jsonl").read_text().splitlines()]
    assert [g["source"] for g in gens] == ["data/memo.jsonl:1", "data/memo.jsonl:2"]
    assert [(g["base"]["text"], g["tuned"]["text"]) for g in gens] == [
        (x["base"]["text"], x["tuned"]["text"]) for x in lines
    ]
    assert "report: runs/memo/eval/report.md" in "\n".join((ws / "runs/memo/eval.log").read_text().splitlines()[-4:])
