"""Runs whose names hold characters of a URL (`?`, `,`, `#`: made by hand or by an older version; the form refuses
them now) open from their links and compare, in headless Chromium (#23 item 22)."""

from __future__ import annotations

import pytest

from tests.ui.conftest import UIServer, make_workspace, tiny_config, write_live

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

NAMES = ("odd?name", "x,y", "h#1")


@pytest.fixture
def server(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    for i, name in enumerate(NAMES):
        write_live(ws / "runs" / name, [
            {"status": "running", "phase": "setup", "pid": 0, "config": tiny_config(run_name=name, seed=i)},
            {"status": "running", "phase": "train", "step": 1, "total_steps": 2, "loss": 2.0 + i},
            {"status": "running", "phase": "train", "step": 2, "total_steps": 2, "loss": 1.0 + i},
            {"status": "finished", "step": 2, "metrics": {"final_train_loss": 1.0 + i}}])
    s = UIServer(ws)
    yield s
    s.stop()


def test_odd_run_names_open_from_their_links_and_compare(server, page):
    from playwright.sync_api import expect

    for name in NAMES:
        page.goto(server.url + "#/runs")
        page.locator(f'tr[data-run="runs/{name}"] a.run-name').click()
        expect(page.locator("#run-title")).to_have_text(name)
        expect(page.locator('#run-status [data-status="finished"]')).to_have_count(1)
        page.wait_for_selector('path[data-series="train loss"][data-n="2"]')
    page.goto(server.url + "#/runs")
    for name in NAMES:
        page.locator(f'tr[data-run="runs/{name}"] input[type=checkbox]').check()
    page.click("#compare-selected")
    for name in NAMES:
        page.wait_for_selector(f'path[data-series="{name}"][data-n="2"]')
    page.reload()  # the Compare URL itself names the three runs
    for name in NAMES:
        page.wait_for_selector(f'path[data-series="{name}"][data-n="2"]')
