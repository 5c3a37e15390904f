"""The web UI in a real browser: the similarity analyzer and search show what the API computes."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from m3search.search.fusion import DEFAULT_FUSION, FUSION_WEIGHTS
from tests.server.conftest import ARTIFACTS


def test_similarity_page(page, live_server):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#status.ok")
    assert "model:" in page.inner_text("#status")
    page.fill("#sim-a", "The cat sits on the mat.")
    page.fill("#sim-b", "A cat is sitting on a rug.")
    page.click("#similarity-form button[type=submit]")
    page.wait_for_selector("#sim-result:not([hidden])")

    expected = httpx.post(
        live_server.url + "/similarity",
        json={"source": "The cat sits on the mat.", "targets": "A cat is sitting on a rug."},
    ).json()["results"][0]
    assert page.inner_text("#sim-level") == expected["level"]
    shown = {
        bar.get_attribute("data-mode"): float(bar.query_selector(".bar-value").inner_text())
        for bar in page.query_selector_all("#sim-bars .bar")
    }
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


DOCS = [
    {
        "id": "eiffel",
        "text": "The Eiffel Tower stands in Paris, the capital of France.",
        "metadata": {"lang": "en"},
    },
    {
        "id": "photo",
        "text": "Photosynthesis converts light into chemical energy.",
        "metadata": {"lang": "en"},
    },
    {"id": "berlin", "text": "Berlin ist die Hauptstadt von Deutschland.", "metadata": {"lang": "de"}},
    {
        "id": "tokyo",
        "text": "Tokyo is the capital of Japan and its largest city.",
        "metadata": {"lang": "en"},
    },
]


@pytest.fixture(scope="module")
def ui_collection(live_server):
    """Collection `ui-docs` on the live server, filled through the API."""
    httpx.delete(live_server.url + "/collections/ui-docs")
    assert httpx.post(live_server.url + "/collections", json={"name": "ui-docs"}).status_code == 201
    r = httpx.post(live_server.url + "/collections/ui-docs/documents", json={"documents": DOCS}, timeout=60)
    assert r.status_code == 200, r.text
    return "ui-docs"


def _sliders(page) -> list[float]:
    return [float(page.input_value(f"#w-{kind}")) for kind in ("dense", "sparse", "colbert")]


def test_search_sliders_show_the_weights_of_the_collections_own_mode(page, live_server, ui_collection):
    """A collection without ColBERT searches dense+sparse, whose default weights differ from all's."""
    httpx.delete(live_server.url + "/collections/ui-no-colbert")
    created = httpx.post(
        live_server.url + "/collections", json={"name": "ui-no-colbert", "outputs": ["dense", "sparse"]}
    ).json()
    assert created["search_mode"] == "dense+sparse"
    assert created["fusion_weights"]["default"] == dict(
        zip(("dense", "sparse", "colbert"), FUSION_WEIGHTS[DEFAULT_FUSION]["dense+sparse"])
    )
    page.goto(live_server.url + "/ui/#search")
    page.wait_for_selector("#search-collection option[value='ui-no-colbert']", state="attached")
    page.select_option("#search-collection", "ui-no-colbert")
    assert _sliders(page) == list(FUSION_WEIGHTS[DEFAULT_FUSION]["dense+sparse"])
    page.select_option("#search-collection", ui_collection)
    assert _sliders(page) == list(FUSION_WEIGHTS[DEFAULT_FUSION]["all"])
    httpx.delete(live_server.url + "/collections/ui-no-colbert")


def test_search_page(page, live_server, ui_collection):
    query = "capital of France"
    page.goto(live_server.url + "/ui/#search")
    page.wait_for_selector(f"#search-collection option[value='{ui_collection}']", state="attached")
    page.select_option("#search-collection", ui_collection)
    page.fill("#search-query", query)
    page.fill("#search-k", "3")
    # the sliders start at what an untouched search uses, and follow the fusion chosen
    assert _sliders(page) == list(FUSION_WEIGHTS[DEFAULT_FUSION]["all"])
    page.select_option("#search-fusion", "rrf")
    assert _sliders(page) == list(FUSION_WEIGHTS["rrf"]["all"])
    page.select_option("#search-fusion", "")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#search-results li")

    expected = httpx.post(
        f"{live_server.url}/collections/{ui_collection}/search",
        json={"query": query, "k": 3, "highlight": True},
    ).json()
    hits = page.query_selector_all("#search-results li.hit")
    assert [h.query_selector(".hit-head strong").inner_text() for h in hits] == [
        r["id"] for r in expected["results"]
    ]
    assert "mode all" in page.inner_text("#search-summary")
    for hit, result in zip(hits, expected["results"]):
        assert hit.query_selector(".doc-text").inner_text() == result["text"]
        marked = [m.inner_text() for m in hit.query_selector_all("mark")]
        spans = sorted(s for m in result["matched_tokens"] for s in m["spans"])
        assert marked == [result["text"][s:e] for s, e in spans]
        modes = [b.get_attribute("data-mode") for b in hit.query_selector_all(".bars .bar")]
        assert modes == list(result["scores"])
    # The top result shares words with the query, so something is highlighted.
    assert hits[0].query_selector_all("mark")
    page.screenshot(path=str(ARTIFACTS / "ui-search.png"), full_page=True)

    # A filter-free sparse-only search with other weights re-ranks; the page follows the API.
    page.select_option("#search-mode", "sparse")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("document.querySelector('#search-summary').textContent.includes('mode sparse')")


def test_collections_page_create_and_upload(page, live_server, tmp_path):
    name = "ui-upload"
    httpx.delete(f"{live_server.url}/collections/{name}")
    upload = tmp_path / "docs.jsonl"
    upload.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    page.goto(live_server.url + "/ui/#collections")
    page.fill("#create-name", name)
    page.click("#create-form button[type=submit]")
    page.wait_for_selector(f"#upload-collection option[value='{name}']", state="attached")
    page.select_option("#upload-collection", name)
    page.set_input_files("#upload-file", str(upload))
    page.click("#upload-form button[type=submit]")
    page.wait_for_function("document.querySelector('#upload-result').textContent.includes('upserted')")
    assert (
        page.inner_text("#upload-result") == f"{len(DOCS)} documents upserted into {name} (now {len(DOCS)})."
    )
    # The table refreshes after the result line appears: wait for its count cell rather than racing it.
    count_cell = page.locator(f"#collections-table tr:has(td:text-is('{name}')) td").nth(1)
    count_cell.wait_for()
    page.wait_for_function(
        "([name, n]) => [...document.querySelectorAll('#collections-table tr')]"
        ".some(r => r.cells.length > 1 && r.cells[0].textContent === name && r.cells[1].textContent === n)",
        arg=[name, str(len(DOCS))],
    )
    assert count_cell.inner_text() == str(len(DOCS))
    page.screenshot(path=str(ARTIFACTS / "ui-collections.png"), full_page=True)
    assert httpx.get(f"{live_server.url}/collections/{name}").json()["count"] == len(DOCS)


def test_collections_page_shows_the_warm_up(page, live_server):
    """A collection the server found on disk is warmed when first opened, and the table's Memory column says so
    ("warm" once every byte is read, with the amount on hover); one the server created shows nothing there."""
    from m3search import Collection

    name = "ui-warm"
    httpx.delete(f"{live_server.url}/collections/{name}")
    made = Collection.create(
        live_server.log_path.parent / "collections" / name, dim=4, outputs=["dense"], cache=False
    )
    made.upsert([{"id": str(i), "dense": np.eye(4)[i % 4] + i} for i in range(3)])
    made.close()
    page.goto(live_server.url + "/ui/#collections")
    memory = page.locator(f"#collections-table tr:has(td:text-is('{name}')) td").nth(6)
    memory.wait_for()
    header = page.locator("#collections-table th").nth(6)
    assert header.inner_text() == "Memory"
    deadline = time.monotonic() + 30
    while memory.inner_text() != "warm":  # reload the list until the warm-up has read everything
        assert time.monotonic() < deadline, memory.inner_text()
        assert memory.inner_text() in ("", "waiting to warm") or memory.inner_text().startswith("warming ")
        page.reload()
        memory.wait_for()
    read = httpx.get(f"{live_server.url}/collections/{name}").json()["warm_up"]["read_bytes"]
    assert read > 0 and memory.get_attribute("title").endswith("read into memory")
    others = page.locator("#collections-table tbody tr:not(:has(td:text-is('ui-warm'))) td:nth-child(7)")
    assert all(text == "" for text in others.all_inner_texts())
    httpx.delete(f"{live_server.url}/collections/{name}")


@pytest.fixture(scope="module")
def image_collection(live_server, flickr_images):
    """Collection `ui-images` on the live server: three photos and one text, through the API."""
    import base64

    httpx.delete(live_server.url + "/collections/ui-images")
    created = httpx.post(live_server.url + "/collections", json={"name": "ui-images", "images": True})
    assert created.status_code == 201 and created.json()["images"], created.text
    docs = [{"id": p.name, "image": base64.b64encode(p.read_bytes()).decode()} for p in flickr_images[:3]]
    docs.append({"id": "caption", "text": "A child in a pink dress climbs the stairs."})
    r = httpx.post(live_server.url + "/collections/ui-images/documents", json={"documents": docs}, timeout=60)
    assert r.status_code == 200, r.text
    return "ui-images"


def test_image_search_page(page, live_server, image_collection, flickr_images):
    photo = flickr_images[1]
    page.goto(live_server.url + "/ui/#search")
    page.wait_for_selector(f"#search-collection option[value='{image_collection}']", state="attached")
    page.select_option("#search-collection", image_collection)
    page.set_input_files("#search-image", str(photo))
    page.wait_for_selector("#search-image-preview:not([hidden])")
    page.select_option("#search-kinds", "image,image+text")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("document.querySelector('#search-summary').textContent.includes('image query')")

    expected = httpx.post(
        f"{live_server.url}/collections/{image_collection}/search/upload",
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        data={"request": json.dumps({"kinds": ["image", "image+text"], "k": 10})},
    ).json()
    hits = page.query_selector_all("#search-results li.hit")
    assert [h.query_selector(".hit-head strong").inner_text() for h in hits] == [
        r["id"] for r in expected["results"]
    ]
    assert hits[0].query_selector(".hit-head strong").inner_text() == photo.name  # the photo finds itself
    assert "mode dense" in page.inner_text("#search-summary")
    # every result shows its thumbnail, decoded by the browser
    page.wait_for_function(
        "[...document.querySelectorAll('#search-results li.hit img.thumb')]"
        ".every(img => img.complete && img.naturalWidth > 0) && "
        "document.querySelectorAll('#search-results li.hit img.thumb').length === 3"
    )
    page.screenshot(path=str(ARTIFACTS / "ui-image-search.png"), full_page=True)

    # image -> text: the one text document, without a thumbnail
    page.select_option("#search-kinds", "text")
    page.click("#search-form button[type=submit]")
    page.wait_for_function(
        "document.querySelectorAll('#search-results li.hit').length === 1 && "
        "document.querySelector('#search-results li.hit strong').textContent === 'caption'"
    )
    assert not page.query_selector("#search-results li.hit img.thumb")
    # text -> image: remove the image, query by text
    page.click("#search-image-clear")
    page.fill("#search-query", "a child climbing stairs")
    page.select_option("#search-kinds", "image,image+text")
    page.click("#search-form button[type=submit]")
    page.wait_for_function(
        "!document.querySelector('#search-summary').textContent.includes('image query')"
        " && document.querySelectorAll('#search-results li.hit img.thumb').length === 3"
    )
    assert not page.is_visible("#error")


def _broken_images(page) -> int:
    """Images the page shows (rendered, not hidden) that have no decoded picture: a broken-image icon."""
    return page.evaluate(
        "[...document.images].filter(i => i.getClientRects().length && !(i.complete && i.naturalWidth > 0))"
        ".length"
    )


def test_search_page_shows_no_broken_query_image(page, live_server, tmp_path):
    from PIL import Image

    page.goto(live_server.url + "/ui/#search")
    page.wait_for_selector("#search-form")
    assert not page.is_visible("#search-image-preview") and _broken_images(page) == 0

    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    page.set_input_files("#search-image", str(picture))
    page.wait_for_function(
        "(() => { const i = document.querySelector('#search-image-preview');"
        " return !i.hidden && i.complete && i.naturalWidth === 40; })()"
    )
    page.click("#search-image-clear")
    page.wait_for_selector("#search-image-preview", state="hidden")
    assert page.get_attribute("#search-image-preview", "src") is None and _broken_images(page) == 0


def test_similarity_ranks_each_line_of_text_b(page, live_server):
    source = "The cat sits on the mat."
    candidates = [
        "A cat is sitting on a rug.",
        "The stock market fell sharply today.",
        "Cats like warm places.",
    ]
    page.goto(live_server.url + "/ui/#similarity")
    page.fill("#sim-a", source)
    page.fill(
        "#sim-b", "\n".join([candidates[0], "", *candidates[1:]]) + "\n"
    )  # blank lines are no candidates
    page.click("#similarity-form button[type=submit]")
    page.wait_for_selector("#sim-list li")

    expected = httpx.post(
        live_server.url + "/similarity", json={"source": source, "targets": candidates}
    ).json()
    ranked = sorted(expected["results"], key=lambda r: -r["scores"]["hybrid"])
    items = page.query_selector_all("#sim-list li")
    assert [i.query_selector(".candidate-text").inner_text() for i in items] == [r["text"] for r in ranked]
    assert [i.query_selector(".level").inner_text() for i in items] == [r["level"] for r in ranked]
    for item, result in zip(items, ranked):
        shown = {
            b.get_attribute("data-mode"): float(b.query_selector(".bar-value").inner_text())
            for b in item.query_selector_all(".bar")
        }
        assert shown == pytest.approx({m: round(v, 3) for m, v in result["scores"].items()}, abs=1e-3)
    assert page.inner_text("#sim-level") == ranked[0]["level"]
    page.screenshot(path=str(ARTIFACTS / "ui-similarity-lines.png"), full_page=True)

    # unticked, the whole of Text B is one text again
    page.uncheck("#sim-lines")
    page.click("#similarity-form button[type=submit]")
    page.wait_for_selector("#sim-list", state="hidden")


def test_similarity_history_is_kept_per_browser(browser, page, live_server):
    page.goto(live_server.url + "/ui/#similarity")
    compared = [
        ("Paris is the capital of France.", "Berlin is the capital of Germany."),
        ("I love pizza", "a\nb"),
    ]
    for a, b in compared:
        page.fill("#sim-a", a)
        page.fill("#sim-b", b)
        page.click("#similarity-form button[type=submit]")
        page.wait_for_function(
            "([a]) => document.querySelector('#sim-history-list li')?.textContent.includes(a)", arg=[a[:20]]
        )
    entries = [e.inner_text() for e in page.query_selector_all("#sim-history-list li")]
    assert len(entries) == 2
    assert entries[0].startswith("I love pizza ↔ 2 candidates")
    assert entries[1].startswith("Paris is the capital of France. ↔ Berlin")

    page.reload()  # kept across visits, most recent first
    page.wait_for_selector("#sim-history-list li")
    assert [e.inner_text() for e in page.query_selector_all("#sim-history-list li")] == entries
    page.click("#sim-history-list li:nth-child(2) button")  # replays a comparison
    page.wait_for_function("document.querySelector('#sim-a').value === 'Paris is the capital of France.'")
    page.wait_for_selector("#sim-result:not([hidden])")
    assert page.input_value("#sim-b") == "Berlin is the capital of Germany."

    other = browser.new_context()  # another browser profile: its own (empty) history
    try:
        fresh = other.new_page()
        fresh.goto(live_server.url + "/ui/#similarity")
        fresh.wait_for_selector("#status.ok")
        assert not fresh.is_visible("#sim-history") and fresh.evaluate("localStorage.length") == 0
    finally:
        other.close()

    page.click("#sim-history-clear")
    page.wait_for_selector("#sim-history", state="hidden")
    assert page.evaluate("localStorage.getItem('m3search-similarity-history')") is None
