"""The page at / in a real browser: headless Chromium driven by Selenium against a real
uvicorn server (in a thread, on a free port): the toy model for what the page does, the
shipped model (models/multi30k-de-en-small) for the screenshots. Skipped where no chromium
and chromedriver are installed (`.ci/run` installs them where it can).

docs/serve_page.png, serve_page_dark.png and serve_page_narrow.png are copies of the
screenshots these tests save in their tmp folders:

    pytest tests/test_browser.py --basetemp=/tmp/page -k screenshot
    cp /tmp/page/*current/serve_page*.png docs/
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT

from seq2seq.serve import ServeLimits, create_app, listen
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
OTHER = "Ein Hund isst im Park."
MODEL = ROOT / "models" / "multi30k-de-en-small"
LIMITS = ServeLimits()


@contextmanager
def serving(translator: Translator, name: str) -> Iterator[str]:
    """The URL of the page of a server for `translator` (as `seq2seq serve` names it)."""
    import uvicorn

    app = create_app(translator, LIMITS, [name])
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


@pytest.fixture(scope="module")
def toy_url(toy_translator: Translator) -> Iterator[str]:
    with serving(toy_translator, "toy.pt") as url:
        yield url


@pytest.fixture(scope="module")
def shipped() -> Translator:
    return Translator.from_checkpoint(MODEL, "cpu")


@pytest.fixture(scope="module")
def shipped_url(shipped: Translator) -> Iterator[str]:
    with serving(shipped, MODEL.name) as url:
        yield url


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)  # no sandbox: CI runs as root in a container
    options.add_argument("--window-size=1000,1000")
    chrome = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield chrome
    chrome.quit()


class Page:
    """The page in `driver`, at a viewport `width` px wide, light or dark."""

    def __init__(self, driver, url: str, width: int = 1000, dark: bool = False):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.width = driver, width
        self.wait = WebDriverWait(driver, 60).until
        scheme = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": scheme})
        self.resize(900)
        driver.get(url)
        self.wait(lambda _: self.find("body").get_attribute("data-info") == "ready")

    def resize(self, height: int) -> None:
        metrics = {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def find(self, css: str):
        return self.all(css)[0]

    def all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        return [found.text for found in self.all(css)]

    def type(self, css: str, text: str) -> None:
        """Types `text` over what the box holds (clear() would fire a change event)."""
        from selenium.webdriver import Keys

        box = self.find(css)
        box.send_keys(Keys.CONTROL, "a")  # each call releases the keys it held down
        box.send_keys(Keys.DELETE, text)

    def ctrl_enter(self) -> None:
        from selenium.webdriver import ActionChains, Keys

        keys = ActionChains(self.driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER)
        keys.key_up(Keys.CONTROL).perform()

    def answered(self) -> None:
        """Waits for the answer (or the error) to the request the page has sent."""
        self.wait(lambda _: self.find("body").get_attribute("data-state") in ("done", "error"))

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def screenshot(self, path: Path) -> None:
        """The whole page, however long, as a PNG."""
        self.resize(self.js("return document.documentElement.scrollHeight"))
        self.driver.save_screenshot(str(path))


def test_each_line_gets_its_translation_and_empty_lines_stay(
    driver, toy_url: str, toy_translator: Translator
) -> None:
    page = Page(driver, toy_url)
    assert page.texts("#pair") == ["German → English"] and page.texts("#model") == ["toy.pt"]
    assert "Ctrl+Enter" in page.find("#translate").text
    page.type("#source", f"{SENTENCE}\n\n{OTHER}")
    page.ctrl_enter()
    page.answered()
    assert page.texts("#error") == [""]
    first, other = (t.text for t in toy_translator.translate([SENTENCE, OTHER]))
    assert page.texts("#output li") == [first, "", other]
    assert re.fullmatch(r"2 lines in \d+ ms", page.find("#timing").text)

    clipboard = ["clipboardReadWrite", "clipboardSanitizedWrite"]  # what a click may do
    driver.execute_cdp_cmd("Browser.grantPermissions", {"permissions": clipboard})
    page.find("#copy").click()
    page.wait(lambda _: page.find("#copy").text == "Copied")
    read = "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0](String(e)))"
    assert driver.execute_async_script(read) == f"{first}\n\n{other}"


def test_an_example_click_translates_it(driver, toy_url: str, toy_translator: Translator) -> None:
    page = Page(driver, toy_url)
    examples = page.all("#examples .example")
    assert 3 <= len(examples) <= 5
    chosen = examples[1].text
    examples[1].click()
    page.answered()
    assert page.find("#source").get_attribute("value") == chosen
    assert page.texts("#output li") == [toy_translator.translate([chosen])[0].text]


def test_beam_and_nbest_are_bounded_by_the_server_limits(
    driver, toy_url: str, toy_translator: Translator
) -> None:
    page = Page(driver, toy_url)
    assert page.find("#beam").get_attribute("max") == str(LIMITS.max_beam)
    page.type("#source", SENTENCE)
    page.type("#beam", "50")
    page.type("#nbest", "50")
    page.ctrl_enter()  # from the n-best box: no change event has clamped it yet
    page.answered()
    assert page.texts("#error") == [""]
    assert page.find("#beam").get_attribute("value") == str(LIMITS.max_beam)
    assert page.find("#nbest").get_attribute("value") == str(LIMITS.max_nbest)
    decode = toy_translator.decode.updated(beam_size=LIMITS.max_beam, nbest=LIMITS.max_nbest)
    expected = toy_translator.translate_nbest([SENTENCE], decode)[0]
    assert page.texts("#nbest-list td:nth-child(2)") == [t.text for t in expected]

    page.type("#beam", "2")
    page.find("#source").click()  # the beam's change event bounds the n-best by it
    assert page.find("#nbest").get_attribute("value") == "2"


def test_errors_are_shown_in_the_page(driver, toy_url: str) -> None:
    page = Page(driver, toy_url)
    page.find("#translate").click()
    assert page.find("#error").text.startswith("Nothing to translate")
    too_long = "a" * (LIMITS.max_chars + 1)
    page.js("document.getElementById('source').value = arguments[0]", f"{SENTENCE}\n\n{too_long}")
    page.find("#translate").click()
    page.answered()
    limit = f"this server takes at most {LIMITS.max_chars}"
    assert page.find("#error").text == f"line 3 has {LIMITS.max_chars + 1} characters; {limit}"
    assert page.find("#error").is_displayed()


def test_the_n_best_and_attention_of_the_line_picked(
    driver, toy_url: str, toy_translator: Translator
) -> None:
    page = Page(driver, toy_url)
    page.type("#beam", "6")
    page.type("#nbest", "6")  # 2 lines x 6 is over max_attention: each line asks for its own
    assert 2 * 6 > LIMITS.max_attention
    page.type("#source", f"{SENTENCE}\n{OTHER}")
    page.find("#translate").click()
    page.answered()
    page.all("#output li")[1].click()
    page.wait(lambda _: page.find("#details-title").text == f"Line 2: {OTHER}")

    decode = toy_translator.decode.updated(beam_size=6, nbest=6)
    expected = toy_translator.translate_nbest([OTHER], decode)[0]
    assert page.texts("#nbest-list td:nth-child(2)") == [t.text for t in expected]
    scores = [float(score) for score in page.texts("#nbest-list td.score")]
    assert scores == pytest.approx([t.score for t in expected], abs=1e-3)
    rows, columns, weights = expected[0].attention_grid()
    assert page.texts("#heatmap thead th") == ["", *columns]
    assert page.texts("#heatmap tbody th") == rows
    cells = page.all("#heatmap tbody td")
    drawn = [float(cell.get_attribute("data-weight")) for cell in cells]
    assert drawn == pytest.approx(weights.flatten().tolist(), abs=1e-3)


def luminance(css_color: str) -> float:
    """0 (black) to 1 (white), from a computed `rgb(...)`/`rgba(...)` color."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_color)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_screenshot_light(driver, shipped_url: str, shipped: Translator, tmp_path: Path) -> None:
    page = Page(driver, shipped_url)
    assert page.texts("#model") == [MODEL.name]
    lines = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.", "", OTHER]
    page.type("#source", "\n".join(lines))
    page.type("#nbest", "3")
    page.ctrl_enter()
    page.answered()
    assert page.texts("#output li") == [t.text for t in shipped.translate(lines)]
    assert luminance(page.find("body").value_of_css_property("background-color")) > 0.8
    page.screenshot(tmp_path / "serve_page.png")


def test_screenshot_dark(driver, shipped_url: str, tmp_path: Path) -> None:
    page = Page(driver, shipped_url, dark=True)
    page.find("#examples .example").click()
    page.answered()
    assert page.texts("#error") == [""]
    assert luminance(page.find("body").value_of_css_property("background-color")) < 0.15
    assert luminance(page.find("#output li").value_of_css_property("color")) > 0.8
    page.screenshot(tmp_path / "serve_page_dark.png")


def test_screenshot_narrow_without_horizontal_scroll(
    driver, shipped_url: str, tmp_path: Path
) -> None:
    page = Page(driver, shipped_url, width=400)
    page.type("#source", f"Zwei Männer stehen am Strand.\n{OTHER}")
    page.ctrl_enter()
    page.answered()
    assert page.js("return window.innerWidth") == 400
    width = "return document.documentElement.%sWidth"  # client: the viewport, no scrollbar
    assert page.js(width % "scroll") <= page.js(width % "client")
    source, output = (page.find(css).rect for css in ("#source", "#output"))
    assert output["y"] > source["y"] + source["height"]  # the panels stack
    page.screenshot(tmp_path / "serve_page_narrow.png")
