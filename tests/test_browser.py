"""The page at / in a real browser: headless Chromium driven by Selenium against a real
uvicorn server (in a thread, on a free port) with the toy model. Skipped where no chromium
and chromedriver are installed (`.ci/run` installs them where it can).

docs/serve_page.png is a copy of the screenshot this test saves in its tmp folder."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seq2seq.serve import Limits, create_app, listen
from seq2seq.translator import Translator

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)
SENTENCE = "Drei Frauen laufen auf der Straße."


@pytest.fixture
def server_url(toy_translator: Translator) -> Iterator[str]:
    import uvicorn

    app = create_app(toy_translator, Limits(), ["toy.pt"])
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)  # no sandbox: CI runs as root in a container
    options.add_argument("--window-size=1000,1000")
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_translates_and_draws_the_attention(
    server_url: str, browser, toy_translator: Translator, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def element(css: str):
        return browser.find_element(By.CSS_SELECTOR, css)

    def texts(css: str) -> list[str]:
        return [found.text for found in browser.find_elements(By.CSS_SELECTOR, css)]

    wait = WebDriverWait(browser, 60)
    browser.get(server_url)
    wait.until(lambda _: element("#model").text)  # GET /info filled in the defaults
    element("#source").send_keys(SENTENCE)
    element("#nbest").clear()
    element("#nbest").send_keys("3")
    element("#translate").click()
    wait.until(lambda _: element("body").get_attribute("data-state") in ("done", "error"))
    assert element("#error").text == ""

    expected = toy_translator.translate_nbest([SENTENCE], toy_translator.decode.updated(nbest=3))[0]
    best = expected[0]
    assert element("#translation").text == best.text
    assert texts("#nbest-list td:nth-child(2)") == [t.text for t in expected]
    scores = [float(score) for score in texts("#nbest-list td.score")]
    assert scores == pytest.approx([t.score for t in expected], abs=1e-3)

    rows, columns, weights = best.attention_grid()
    assert texts("#heatmap thead th") == ["", *columns]
    assert texts("#heatmap tbody th") == rows
    cells = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody td")
    drawn = [float(cell.get_attribute("data-weight")) for cell in cells]
    assert drawn == pytest.approx(weights.flatten().tolist(), abs=1e-3)
    assert all(cell.value_of_css_property("background-color") for cell in cells)
    browser.save_screenshot(str(tmp_path / "serve_page.png"))
