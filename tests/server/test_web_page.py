"""The web page at ``/`` in a real browser: the system Chromium, headless, driven by Selenium, against a server over
a small index built with all-MiniLM-L6-v2 (one browser and one server for the module).

Each check compares what the page shows with what the JSON API answers for the same request. With
``QWEN3_RAG_SCREENSHOTS=DIR`` the tests also save a picture of each screen there (docs/screenshots/make_screenshots.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

KEY = "page-key-7"
INDEX = "handbook"
HOSTILE = ("Release notes for 2.4.\n\n<script>window.__pwned = true; document.title = 'pwned';</script>"
           "<img src=x onerror=\"window.__pwned = true\"> The build log now prints \x1b[31mFAILED\x1b[0m in red "
           "when a step fails.\n")
HANDBOOK = [
    ("handbook/operations.md",
     "# Operations\n\n## Logs\n\nLogs are rotated nightly by logrotate. Old logs are compressed with gzip (about "
     "10\U0001d465 smaller) and kept for fourteen days on the log host, then deleted.\n\n## Backups\n\nBackups "
     "run every Sunday night and are copied to a second site. A restore is tested on the first Monday of each "
     "month.\n\n## Monitoring\n\nAlerts go to the on-call engineer through the pager; the dashboard shows "
     "disk, memory and request latency.\n",
     {"team": "ops", "year": 2024}),
    ("handbook/deploys.md",
     "# Deploys\n\nDeploys go out on Tuesdays after the tests pass on the main branch. A deploy is rolled back "
     "with one command, and the previous build stays on the hosts for a week.\n", {"team": "dev", "year": 2024}),
    ("handbook/security.md",
     "# Security\n\nAPI keys are rotated every ninety days. Access to production needs two people to approve "
     "it, and every login is written to the audit log.\n", {"team": "security", "year": 2023}),
    ("release-notes.html", HOSTILE, {"team": "dev", "year": 2025}),
]
ESC = "\\x1b"  # how the page shows the escape character


def _need_browser() -> tuple[str, str]:
    """The system Chromium and its driver; CI (which installs them, .ci/run) fails without them, elsewhere the
    module is skipped with the command that installs them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        message = f"the browser tests need {', '.join(missing)}: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory, minilm_embedder, tiny_reranker, fake_llm, serve_for_module) -> Iterator[str]:
    """A server with an API key over the handbook index (MiniLM), the tiny reranker and the fake language model."""
    from qwen3_rag import Document, Index, ingest_documents
    from qwen3_rag.server import ServerConfig
    from qwen3_rag.server.resources import OpenIndex, Resources

    path = tmp_path_factory.mktemp("web") / INDEX
    index = Index.create(path, minilm_embedder, chunk_size=32, chunk_overlap=0)  # passages are parts of documents
    ingest_documents([Document(id=source, text=text, source=source, metadata=meta)
                      for source, text, meta in HANDBOOK], index)
    resources = Resources([minilm_embedder], tiny_reranker, [OpenIndex(INDEX, index, minilm_embedder)],
                          model_name="all-MiniLM-L6-v2")
    config = ServerConfig(api_key=KEY, llm_url=fake_llm[0], llm_model="fake-qwen3")
    with serve_for_module(resources, config) as url:
        yield url


def _api(site: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {KEY}"}
    response = (httpx.post(site + path, json=body, headers=headers, timeout=60) if body is not None
                else httpx.get(site + path, headers=headers, timeout=60))
    assert response.status_code == 200, response.text
    return response.json()


def _page_url(site: str, **params: Any) -> str:
    return f"{site}/?{urlencode(params)}" if params else f"{site}/"


def _open(browser, site: str, url: str, *, key: str | None = KEY) -> None:
    """Load ``url`` in a tab whose session holds ``key`` (None: no key), and wait until the page has settled."""
    browser.get(site + "/health")  # same origin: the session storage the page reads
    browser.execute_script("sessionStorage.clear(); if (arguments[0]) sessionStorage.setItem("
                           "'qwen3-rag-api-key', arguments[0]);", key)
    browser.get(url)
    if key is not None:
        _settle(browser)


def _settle(browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(
        lambda d: d.find_element("id", "main").get_attribute("aria-busy") == "false"
        and d.find_element("id", "index").get_attribute("value") != "")


def _wait(browser, condition, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def _shot(browser, name: str) -> None:
    folder = os.environ.get("QWEN3_RAG_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def _as_shown(value: Any) -> str:
    """A value as the index page shows it."""
    return "—" if value is None else value if isinstance(value, str) else json.dumps(value)


def _error(browser) -> str:
    box = browser.find_element("id", "error")
    return "" if box.get_attribute("hidden") is not None else box.text


def _results(browser) -> list[Any]:
    return browser.find_elements("css selector", "#results .result")


def _shown_scores(result) -> dict[str, float]:
    return {badge.get_attribute("data-kind"): float(badge.find_element("class name", "score-value").text)
            for badge in result.find_elements("class name", "score")}


def _marked(result) -> list[str]:
    return [mark.text for mark in result.find_elements("css selector", ".passage mark.term")]


def test_search_by_typing_shows_sources_scores_and_highlighted_terms(browser, site):
    from selenium.webdriver.support.ui import Select

    _open(browser, site, _page_url(site))
    assert _results(browser) == [] and _error(browser) == ""
    browser.find_element("id", "q").send_keys("how are logs rotated?")
    Select(browser.find_element("id", "mode")).select_by_value("hybrid")
    browser.find_element("id", "rerank").click()
    k = browser.find_element("id", "k")
    k.clear()
    k.send_keys("5")
    browser.find_element("id", "search-button").click()
    _settle(browser)

    state = parse_qs(urlparse(browser.current_url).query)
    assert state == {"index": [INDEX], "q": ["how are logs rotated?"], "mode": ["hybrid"], "rerank": ["1"],
                     "k": ["5"]}
    expected = _api(site, "/v1/search", {"index": INDEX, "query": "how are logs rotated?", "k": 5, "mode": "hybrid",
                                         "rerank": True, "highlight": True})["hits"]
    results = _results(browser)
    assert [r.find_element("class name", "source").text for r in results] == [h["source"] for h in expected]
    for result, hit in zip(results, expected, strict=True):
        shown = _shown_scores(result)
        assert set(shown) == {"dense", "bm25", "fused", "rerank"} & set(hit["scores"]) and "rerank" in shown
        for kind, value in shown.items():
            assert value == pytest.approx(hit["scores"][kind], abs=6e-5), kind
        assert _marked(result) == [hit["text"][s:e] for s, e in hit["highlights"]]
    logs = next(r for r in results if "Logs are rotated" in r.text)
    # BM25's matching: "logs" and "log" stem alike, "are" is a stop word
    assert {"logs", "rotated"} <= {m.lower() for m in _marked(logs)} <= {"logs", "rotated", "log"}
    hit = next(h for h in expected if "Logs are rotated" in h["text"])
    lines = f"lines {hit['start_line']}–{hit['end_line']}" if hit["end_line"] > hit["start_line"] else \
        f"line {hit['start_line']}"
    assert logs.find_element("class name", "where").text == " · ".join([" › ".join(hit["headings"]), lines])


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_search_by_url(browser, site, mode):
    _open(browser, site, _page_url(site, index=INDEX, q="when do backups run?", mode=mode, k=3))
    expected = _api(site, "/v1/search", {"index": INDEX, "query": "when do backups run?", "k": 3, "mode": mode})
    results = _results(browser)
    assert [r.find_element("class name", "passage").get_attribute("textContent") for r in results] == \
        [h["text"].replace("\x1b", ESC) for h in expected["hits"]] and len(results) >= 2
    assert "Backups run every Sunday" in results[0].text
    kinds = {"bm25"} if mode == "bm25" else {"dense", "bm25", "fused"}
    assert all(set(_shown_scores(r)) <= kinds for r in results) and set(_shown_scores(results[0])) == kinds
    assert browser.find_element("id", "q").get_attribute("value") == "when do backups run?"
    assert browser.find_element("id", "mode").get_attribute("value") == mode
    assert browser.find_element("id", "k").get_attribute("value") == "3"
    if mode == "hybrid":
        _shot(browser, "search")


def test_a_result_opens_the_whole_document_with_the_passage_marked(browser, site):
    _open(browser, site, _page_url(site, index=INDEX, q="when do backups run?", mode="hybrid", k=5))
    hit = _api(site, "/v1/search", {"index": INDEX, "query": "when do backups run?", "k": 5, "mode": "hybrid",
                                    "highlight": True})["hits"][0]
    _results(browser)[0].find_element("class name", "source").click()
    _settle(browser)
    document = _api(site, f"/v1/indexes/{INDEX}/documents/{hit['doc_id']}")
    shown = browser.find_element("id", "doc-text")
    passage = browser.find_element("id", "passage")
    assert hit["start"] > 0 and len(hit["text"]) < len(document["text"]) / 2  # a part, shown in place
    assert "\U0001d465" in document["text"][:hit["start"]]  # offsets in code points, the page's in UTF-16 units
    assert shown.get_attribute("textContent") == document["text"]
    assert passage.get_attribute("textContent") == hit["text"] == document["text"][hit["start"]:hit["end"]]
    before = browser.execute_script(
        "const r = document.createRange(); r.setStart(document.getElementById('doc-text'), 0);"
        "r.setEndBefore(document.getElementById('passage')); return r.toString();")
    assert before == document["text"][:hit["start"]]
    assert [m.text for m in passage.find_elements("css selector", "mark.term")] == \
        [hit["text"][s:e] for s, e in hit["highlights"]]
    assert browser.find_element("id", "doc-title").text == hit["source"]
    assert browser.find_element("id", "doc-where").text.endswith(f"{' › '.join(hit['headings'])} · lines "
                                                                 f"{hit['start_line']}–{hit['end_line']}")
    assert parse_qs(urlparse(browser.current_url).query)["doc"] == [hit["doc_id"]]
    _shot(browser, "document")
    browser.find_element("id", "back").click()  # history.back(): the page changes when the browser says so
    _wait(browser, lambda d: d.find_element("id", "view-document").get_attribute("hidden") is not None)
    _settle(browser)
    assert _results(browser) and "doc" not in parse_qs(urlparse(browser.current_url).query)


def test_markup_and_terminal_escapes_in_a_document_show_as_text(browser, site):
    _open(browser, site, _page_url(site, index=INDEX, q="script window pwned title", mode="bm25", k=3))
    hit = _api(site, "/v1/search", {"index": INDEX, "query": "script window pwned title", "k": 3, "mode": "bm25"})
    result = _results(browser)[0]
    assert result.find_element("class name", "source").text == "release-notes.html"
    passage = result.find_element("class name", "passage").get_attribute("textContent")
    assert passage == hit["hits"][0]["text"] and "script>" in passage
    result.find_element("class name", "source").click()
    _settle(browser)
    text = browser.find_element("id", "doc-text").get_attribute("textContent")
    assert text == HOSTILE.replace("\x1b", ESC) and f"{ESC}[31mFAILED{ESC}[0m" in text
    assert browser.execute_script("return window.__pwned === undefined")
    assert "pwned" not in browser.title
    assert browser.find_elements("css selector", "#doc-text script, #doc-text img, #results script, #results img") == []


def test_chat_streams_the_answer_with_numbered_citation_links(browser, site, fake_llm):
    _open(browser, site, _page_url(site, index=INDEX, mode="hybrid", k=3, view="chat"))
    question = browser.find_element("id", "chat-input")
    question.send_keys("How are logs rotated?")
    browser.find_element("id", "chat-button").click()
    reply = _wait(browser, lambda d: d.find_element("css selector", ".message.assistant.done"))
    answer = reply.find_element("class name", "answer")
    assert answer.text == "Logs are rotated nightly [1]."  # the fake language model's answer
    assert answer.get_attribute("data-parts") == "3"  # the fake model sends the answer in three events
    request = fake_llm[1][-1]
    assert request["stream"] is True and "Logs are rotated nightly by logrotate" in request["messages"][-1]["content"]
    expected = _api(site, "/v1/context", {"index": INDEX, "query": "How are logs rotated?", "k": 3, "mode": "hybrid"})
    first = expected["citations"][0]
    link = answer.find_element("css selector", "a.cite")
    assert link.text == "[1]" and link.get_attribute("data-n") == "1"
    sources = reply.find_elements("css selector", ".sources li")
    assert [s.text for s in sources] == [f"[{c['n']}] {c['citation']}" for c in expected["citations"]]
    assert [s.get_attribute("class") for s in sources][0] == "source-item used"
    _shot(browser, "chat")
    link.click()
    _settle(browser)
    assert browser.find_element("id", "passage").get_attribute("textContent") == first["text"]


def test_index_page_shows_counts_model_chunking_and_type(browser, site):
    _open(browser, site, _page_url(site))
    browser.find_element("id", "tab-index").click()
    _settle(browser)
    info = _api(site, f"/v1/indexes/{INDEX}")
    tables = {t.find_element("tag name", "caption").text: {row.find_element("tag name", "th").text:
                                                           row.find_element("tag name", "td").text
                                                           for row in t.find_elements("tag name", "tr")}
              for t in browser.find_elements("css selector", "#index-info table")}
    assert tables["Counts"] == {k: str(v) for k, v in info["counts"].items()} and info["counts"]["documents"] == 4
    assert tables["Index"] == {"type": info["index_type"]} and info["index_type"] == "Flat"
    assert tables["Chunking"]["chunk_size"] == "32" and tables["Chunking"]["chunk_overlap"] == "0"
    record = tables["Model record"]
    assert set(record) == set(info["model"])
    assert record == {k: _as_shown(v) for k, v in info["model"].items()}
    assert parse_qs(urlparse(browser.current_url).query)["view"] == ["index"]
    _shot(browser, "index")


def test_the_api_key_is_asked_once_and_kept_for_the_session(browser, site):
    _open(browser, site, _page_url(site, index=INDEX, q="backups", mode="bm25"), key=None)
    dialog = _wait(browser, lambda d: d.find_element("css selector", "#key-dialog[open]"))
    assert "needs an API key" in dialog.find_element("id", "key-message").text
    browser.find_element("id", "key-cancel").click()  # no key: the server's refusal, and how to give one
    _wait(browser, lambda d: "needs an API key" in _error(d) and 'the "API key" button' in _error(d))
    browser.find_element("id", "key-button").click()
    _wait(browser, lambda d: d.find_element("css selector", "#key-dialog[open]"))
    browser.find_element("id", "key-input").send_keys("wrong-key")
    browser.find_element("id", "key-ok").click()
    _wait(browser, lambda d: "not valid" in d.find_element("id", "key-message").text
          and d.find_element("id", "key-dialog").get_attribute("open") is not None)
    browser.find_element("id", "key-input").send_keys(KEY + "\n")  # Enter uses the key
    _settle(browser)
    assert _results(browser) and _error(browser) == ""
    assert browser.execute_script("return sessionStorage.getItem('qwen3-rag-api-key')") == KEY
    browser.refresh()
    _settle(browser)
    assert browser.find_element("id", "key-dialog").get_attribute("open") is None and _results(browser)


@pytest.mark.parametrize(("params", "message"), [
    ({"filter": '{"year": {"$bogus": 1}}'}, "bad filter"),
    ({"filter": "team = ops"}, "the filter is not JSON"),
    ({"k": 5000}, "k=5000 is more than this server's limit of 1000"),
    ({"index": "nope"}, "no index named “nope” is served here (served: handbook)"),
], ids=["server refuses the filter", "filter not JSON", "k too large", "unknown index"])
def test_errors_show_as_readable_messages(browser, site, params, message):
    _open(browser, site, _page_url(site, **{"index": INDEX, "q": "logs", **params}))
    assert message in _error(browser)
    if "filter" in params and "$bogus" in params["filter"]:
        assert "(HTTP 400)" in _error(browser)


def test_phone_width(browser, site):
    browser.set_window_size(390, 844)
    try:
        _open(browser, site, _page_url(site, index=INDEX, q="how are logs rotated?", mode="hybrid", k=3))
        overflow = "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert browser.execute_script("return window.innerWidth") <= 400
        assert len(_results(browser)) == 3 and browser.execute_script(overflow) <= 0
        search = browser.find_element("id", "search-button").rect
        assert search["x"] + search["width"] <= 390
        _shot(browser, "phone")
        _results(browser)[0].find_element("class name", "source").click()
        _settle(browser)
        assert browser.execute_script(overflow) <= 0
    finally:
        browser.set_window_size(1280, 900)
