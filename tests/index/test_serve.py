"""`vreid serve`: the JSON API through the ASGI test client, and the page in a real headless
chromium (skipped, saying so, where no chromium is installed)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from vreid.core.config import load_config
from vreid.core.errors import VreidError
from vreid.workflows.index import Searcher, build_index
from vreid.workflows.serve import create_app, serve


@pytest.fixture(scope="module")
def searcher(random_checkpoints, image_folders, tmp_path_factory) -> Searcher:
    out = tmp_path_factory.mktemp("serve") / "ix"
    cfg = load_config(None, ["runtime.device=cpu"])
    build_index(image_folders["gallery"], out, random_checkpoints[:1], config=cfg, progress=False)
    return Searcher(out, config=cfg)


def test_query_by_upload_by_id_and_paging(searcher, image_folders):
    client = TestClient(create_app(searcher))
    assert "vreid" in client.get("/").text
    query = sorted(image_folders["query"].iterdir())[0]
    feats, _ = searcher.features_of([query])
    expected = np.argsort(searcher.distances(feats)[0][0], kind="stable")
    r = client.post("/api/query", files={"image": query.read_bytes()}, data={"top": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["id"] for h in body["hits"]] == expected[:4].tolist()
    assert body["total"] == searcher.index.count
    assert {"distance", "camera", "track", "name", "thumb"} <= set(body["hits"][0])
    page2 = client.post("/api/query", data={"query": body["query"], "offset": "4", "top": "4"})
    assert [h["id"] for h in page2.json()["hits"]] == expected[4:8].tolist()
    by_id = client.post("/api/query", data={"id": "3", "top": "2"}).json()
    assert by_id["hits"][0]["id"] == 3  # a gallery item finds itself first
    thumb = client.get(body["hits"][0]["thumb"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"


def test_bad_requests_are_refused(searcher):
    client = TestClient(create_app(searcher, max_upload=2048))
    assert client.post("/api/query", files={"image": b"not an image"}).status_code == 400
    assert client.post("/api/query", files={"image": b"\xff" * 5000}).status_code == 413
    assert client.post("/api/query", data={"id": "999999"}).status_code == 404
    assert client.post("/api/query", data={}).status_code == 400
    assert client.get("/thumb/-1").status_code == 404
    assert client.get("/thumb/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_a_token_guards_everything(searcher):
    client = TestClient(create_app(searcher, token="s3cret"))
    assert client.get("/api/info").status_code == 401
    assert client.get("/thumb/0").status_code == 401
    assert client.get("/api/info?token=s3cret").status_code == 200
    assert client.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_non_loopback_bind_needs_a_token(searcher):
    with pytest.raises(VreidError, match="--token"):
        serve(searcher.index.root, host="0.0.0.0", port=1, token=None)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_the_page_in_headless_chromium(searcher, image_folders, tmp_path):
    browser = _chromium()
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip(
            "no chromium/chromedriver found (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    import uvicorn
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        query = sorted(image_folders["query"].iterdir())[0]
        driver.find_element(By.ID, "file").send_keys(str(query))
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .hit")) > 0
        )
        first = driver.find_elements(By.CSS_SELECTOR, "#grid .hit")[0]
        feats, _ = searcher.features_of([query])
        expected = int(np.argsort(searcher.distances(feats)[0][0], kind="stable")[0])
        assert first.get_attribute("data-id") == str(expected)
        assert "camera" in first.text
        assert "#1" in first.text
        shot = os.environ.get("VREID_SCREENSHOT")
        driver.save_screenshot(shot or str(tmp_path / "page.png"))
        first.click()  # a gallery image as the next query: it finds itself first
        WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#grid .hit")[0].get_attribute("data-id")
                == str(expected)
                and f"/thumb/{expected}"
                in d.find_element(By.ID, "query").get_attribute("innerHTML")
            )
        )
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)
