"""The web UI in a real browser: the similarity analyzer and search show what the API computes."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import ARTIFACTS


def test_similarity_page(page, live_server):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#status.ok")
    assert "model:" in page.inner_text("#status")
    page.fill("#sim-a", "The cat sits on the mat.")
    page.fill("#sim-b", "A cat is sitting on a rug.")
    page.click("#similarity-form button[type=submit]")
    page.wait_for_selector("#sim-result:not([hidden])")

    expected = httpx.post(live_server.url + "/similarity", json={
        "source": "The cat sits on the mat.", "targets": "A cat is sitting on a rug."}).json()["results"][0]
    assert page.inner_text("#sim-level") == expected["level"]
    shown = {bar.get_attribute("data-mode"): float(bar.query_selector(".bar-value").inner_text())
             for bar in page.query_selector_all("#sim-bars .bar")}
    assert list(shown) == ["dense", "sparse", "colbert", "hybrid"]
    assert shown == pytest.approx({m: round(v, 3) for m, v in expected["scores"].items()}, abs=1e-3)
    assert not page.is_visible("#error")
    page.screenshot(path=str(ARTIFACTS / "ui-similarity.png"), full_page=True)


def test_similarity_page_shows_api_errors(page, live_server):
    page.goto(live_server.url + "/ui/#similarity")
    page.fill("#sim-a", "   ")
    page.fill("#sim-b", "something")
    page.click("#similarity-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "422" in page.inner_text("#error") and "empty" in page.inner_text("#error")
