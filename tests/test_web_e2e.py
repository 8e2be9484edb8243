"""The web page in a real headless Chromium: upload a pill photo, read the answer.

The service runs in uvicorn on a free loopback port (a background thread) with the random
weight sample artifact; Chromium is driven through chromedriver by Selenium. Skipped, with
the reason, where Debian's ``chromium``/``chromium-driver`` are not installed (``.ci/run``
installs them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rxvision.identify.identifier import Identifier
from rxvision.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="headless browser test needs Debian's chromium and chromium-driver "
           "(apt-get install -y chromium chromium-driver; .ci/run does this)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(identifier: Identifier) -> Iterator[str]:
    """Serve ``identifier`` with uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    port = _free_port()
    app = create_app(ServeSettings(max_wait_ms=1.0), identifier=identifier)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def server_url(sample_artifact: Path) -> Iterator[str]:
    with _serve(Identifier.load(sample_artifact)) as url:
        yield url


@pytest.fixture(scope="module")
def library_server_url(sample_artifact: Path, sample_dir: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sample artifact with a drug library built for it from the sample manifest."""
    from rxvision.library.for_model import build_model_library

    model = tmp_path_factory.mktemp("library-model") / "sample"
    shutil.copytree(sample_artifact, model)
    build_model_library(sample_dir / "manifest.csv", model)
    with _serve(Identifier.load(model)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=412,915"):  # a phone-sized window
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _assert_no_broken_images(driver: object) -> None:
    """Every displayed <img> has loaded a picture: no broken-image icons anywhere."""
    from selenium.webdriver.common.by import By

    for img in driver.find_elements(By.TAG_NAME, "img"):
        if img.is_displayed():
            ok = driver.execute_script("return arguments[0].complete && "
                                       "arguments[0].naturalWidth > 0", img)
            assert ok, f"broken image shown: #{img.get_attribute('id')}"


def _identify_on_page(driver: object, url: str, model_prefix: str, photo: Path) -> object:
    """Open the page, wait for /v1/model, upload ``photo``, press Identify and wait for the
    results; returns the WebDriverWait used (30 s)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith(model_prefix))
    driver.find_element(By.ID, "photo").send_keys(str(photo.resolve()))
    wait.until(ec.element_to_be_clickable((By.ID, "identify"))).click()
    wait.until(lambda d: d.find_element(By.ID, "results").is_displayed())
    return wait


def _watch_progress(driver: object) -> None:
    """Record whether the progress indicator is shown at any moment (window.__progressSeen)."""
    driver.execute_script("""
        window.__progressSeen = false;
        const p = document.getElementById('progress');
        new MutationObserver(() => { if (!p.hidden) window.__progressSeen = true; })
            .observe(p, {attributes: true});""")


def test_upload_photo_shows_top5_with_bars_and_attention(
    browser: object, server_url: str, sample_dir: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    photo = sorted((sample_dir / "images").glob("*.jpg"))[0]
    driver.get(server_url + "/")
    wait = WebDriverWait(driver, 30)
    # The page has read /v1/model (explanations on) before it offers to identify.
    wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith("model sample@"))
    file_input = driver.find_element(By.ID, "photo")
    assert file_input.get_attribute("capture") == "environment"
    assert file_input.get_attribute("accept") == "image/*"
    _assert_no_broken_images(driver)  # empty photo slots show nothing, not a broken icon
    assert not driver.find_element(By.ID, "preview-front").is_displayed()
    file_input.send_keys(str(photo.resolve()))
    assert driver.find_element(By.ID, "preview-front").is_displayed()
    assert not driver.find_element(By.ID, "preview-back").is_displayed()
    button = wait.until(ec.element_to_be_clickable((By.ID, "identify")))
    _watch_progress(driver)
    button.click()

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#candidates li.candidate")) == 5)
    items = driver.find_elements(By.CSS_SELECTOR, "#candidates li.candidate")
    labels = [li.find_element(By.CSS_SELECTOR, ".label").text for li in items]
    assert all(re.fullmatch(r"\d{5}-\d{4}-\d{2}", label) for label in labels), labels
    pcts = [li.find_element(By.CSS_SELECTOR, ".pct").text for li in items]
    assert all(re.fullmatch(r"\d+(\.\d)?%", p) for p in pcts), pcts
    values = [float(p.rstrip("%")) for p in pcts]
    assert values == sorted(values, reverse=True)
    for li, value in zip(items, values, strict=True):
        fill = li.find_element(By.CSS_SELECTOR, ".bar .fill")
        width = float(fill.value_of_css_property("width").removesuffix("px"))
        bar = float(li.find_element(By.CSS_SELECTOR, ".bar")
                    .value_of_css_property("width").removesuffix("px"))
        assert width == pytest.approx(bar * value / 100, abs=2.0)  # the bar shows the number

    verdict = driver.find_element(By.ID, "verdict")
    assert verdict.is_displayed()
    # 24 labels, random weights: confidence far below 0.5, so the page must say "not sure".
    assert "Not sure" in verdict.text or "Unknown pill" in verdict.text

    # Explanations are computed only when asked for: none yet, a "Show why" button instead.
    assert not driver.find_element(By.ID, "overlay").is_displayed()
    why = driver.find_element(By.ID, "show-why")
    assert why.is_displayed()
    _assert_no_broken_images(driver)
    why.click()
    wait.until(lambda d: d.find_element(By.ID, "overlay").is_displayed())
    assert not driver.find_element(By.ID, "show-why").is_displayed()
    for kind in ("occlusion", "attention"):  # what the answer depends on, where it looked
        overlay = driver.find_element(By.ID, kind)
        wait.until(lambda d, kind=kind: d.execute_script(
            f"const i = document.getElementById('{kind}'); return i.complete && i.naturalWidth"))
        assert overlay.is_displayed()
        assert overlay.get_attribute("src").startswith("data:image/png;base64,")
        assert driver.execute_script(
            f"return document.getElementById('{kind}').naturalWidth") == 64
    assert "error" not in driver.find_element(By.ID, "status").get_attribute("class")
    assert driver.execute_script("return window.__progressSeen")  # shown while it worked
    assert not driver.find_element(By.ID, "progress").is_displayed()  # and gone after
    _assert_no_broken_images(driver)


def test_a_small_pill_is_zoomed_and_the_page_says_so(
    browser: object, server_url: str, sample_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    photos = {"small": tmp_path / "small_pill.png",
              "studio": sorted((sample_dir / "images").glob("*.jpg"))[0]}
    table = Image.new("RGB", (1200, 900), (170, 165, 150))
    ImageDraw.Draw(table).ellipse((560, 400, 680, 470), fill=(200, 60, 60))
    table.save(photos["small"])
    wait = WebDriverWait(driver, 30)
    for name, photo in photos.items():
        driver.get(server_url + "/")
        wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith("model sample@"))
        driver.find_element(By.ID, "photo").send_keys(str(photo.resolve()))
        wait.until(ec.element_to_be_clickable((By.ID, "identify"))).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#candidates li.candidate"))
        notes = driver.find_elements(By.ID, "zoom-note")
        if name == "small":
            assert len(notes) == 1 and "square crop around it" in notes[0].text
        else:  # the studio photo's pills fill the frame: no zoom, no note
            assert notes == []


def test_a_photo_of_nothing_is_asked_to_be_retaken(browser: object, server_url: str,
                                                     tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    driver = browser
    red = tmp_path / "red.png"
    Image.new("RGB", (224, 224), (200, 10, 10)).save(red)
    _identify_on_page(driver, server_url, "model sample@", red)
    verdict = driver.find_element(By.ID, "verdict").text
    assert "Please retake the photo: no pill found in the photo." in verdict
    assert driver.find_elements(By.CSS_SELECTOR, "#candidates li") == []
    assert not driver.find_element(By.ID, "candidates-heading").is_displayed()
    assert not driver.find_element(By.ID, "show-why").is_displayed()
    _assert_no_broken_images(driver)


@pytest.mark.parametrize("width", [320, 375])
def test_page_fits_a_phone_screen(browser: object, server_url: str, sample_dir: Path,
                                  width: int) -> None:
    """On a narrow screen nothing sticks out sideways and the main controls are in reach."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.set_window_size(width, 740)
    try:
        driver.get(server_url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith("model "))
        inner = driver.execute_script("return window.innerWidth")
        assert inner <= width
        photo = sorted((sample_dir / "images").glob("*.jpg"))[2]
        driver.find_element(By.ID, "photo").send_keys(str(photo.resolve()))
        wait.until(ec.element_to_be_clickable((By.ID, "identify"))).click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#candidates li")) == 5)
        driver.find_element(By.ID, "show-why").click()
        wait.until(lambda d: d.find_element(By.ID, "overlay").is_displayed())
        assert driver.execute_script(
            "return document.documentElement.scrollWidth") <= inner  # no sideways scroll
        for element_id in ("identify", "verdict", "candidates", "occlusion", "photo-pick"):
            rect = driver.execute_script(
                "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];",
                driver.find_element(By.ID, element_id))
            assert rect[0] >= 0 and rect[1] <= inner + 0.5, (element_id, rect, inner)
        # The Identify button is a comfortable tap target.
        height = driver.execute_script(
            "return document.getElementById('identify').getBoundingClientRect().height")
        assert height >= 44
    finally:
        driver.set_window_size(412, 915)


def test_search_box_finds_a_pill_by_its_imprint(
    browser: object, library_server_url: str, server_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)
    driver.get(server_url + "/")  # a model without a library: no search box
    wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith("model sample@"))
    assert not driver.find_element(By.ID, "library-search").is_displayed()

    driver.get(library_server_url + "/")
    wait.until(lambda d: d.find_element(By.ID, "library-search").is_displayed())
    assert "24 pills" in driver.find_element(By.ID, "library-info").text
    driver.find_element(By.ID, "search-imprint").send_keys("5770 tev")  # one character short
    driver.find_element(By.ID, "search-color").send_keys("white")
    driver.find_element(By.ID, "search-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results li.hit"))
    first = driver.find_elements(By.CSS_SELECTOR, "#search-results li.hit")[0]
    assert "olanzapine 10 mg oral tablet" in first.find_element(By.CSS_SELECTOR, ".drug").text
    assert "NDC 00093-5770-56" in first.text and "imprint TEVA 5770" in first.text
    photo = first.find_element(By.CSS_SELECTOR, "img.ref-photo")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", photo) > 0)
    assert "best match first" in driver.find_element(By.ID, "search-status").text

    color = driver.find_element(By.ID, "search-color")
    color.clear()
    color.send_keys("plaid")
    driver.find_element(By.ID, "search-button").click()
    status = driver.find_element(By.ID, "search-status")
    wait.until(lambda d: "unknown colour" in status.text)
    assert "error" in status.get_attribute("class")


def test_answers_on_the_page_name_the_drug_and_use_the_typed_imprint(
    browser: object, library_server_url: str, sample_dir: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)
    driver.get(library_server_url + "/")
    wait.until(lambda d: d.find_element(By.ID, "typed-facts").is_displayed())
    driver.find_element(By.ID, "photo").send_keys(
        str((sample_dir / "images" / "67877-0147-01.jpg").resolve()))
    driver.find_element(By.ID, "typed-imprint").send_keys("novel 123")  # temazepam's
    wait.until(ec.element_to_be_clickable((By.ID, "identify"))).click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#candidates li.candidate"))
    first = driver.find_elements(By.CSS_SELECTOR, "#candidates li.candidate")[0]
    assert "temazepam" in first.find_element(By.CSS_SELECTOR, ".drug").text.lower()
    assert first.find_element(By.CSS_SELECTOR, ".controlled").text.upper() == "CONTROLLED CIV"
    link = first.find_element(By.CSS_SELECTOR, "a.dailymed")
    assert link.get_attribute("href").endswith("67877-0147-01")
    assert first.find_elements(By.CSS_SELECTOR, "details.lookalikes li.lookalike")
    typed = driver.find_element(By.ID, "typed-result")
    assert typed.is_displayed() and "combined" in typed.text


@pytest.fixture(scope="module")
def crop_server_url(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[str]:
    """A random-weight crop model (augment.framing: crop) with the bundled pill finder."""
    import torch
    from conftest import REPO_ROOT, make_config

    from rxvision.artifact import save_artifact
    from rxvision.data import load_dataset
    from rxvision.models import build_model

    labels = [s.label for s in load_dataset(sample_dir / "manifest.csv").samples]
    cfg = make_config(num_classes=len(labels), overrides=["augment.framing=crop"])
    torch.manual_seed(0)
    path = save_artifact(tmp_path_factory.mktemp("crop-model") / "crop",
                         build_model(cfg, num_classes=len(labels)), cfg, labels)
    shutil.copytree(REPO_ROOT / "models" / "rxvision-segmenter", path / "segmenter")
    from rxvision.library.for_model import build_model_library

    build_model_library(sample_dir / "manifest.csv", path)  # so the imprints are read
    with _serve(Identifier.load(path, tta=1)) as url:
        yield url


def test_each_pill_found_is_boxed_and_can_be_picked(browser: object, crop_server_url: str,
                                                   sample_dir: Path, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    from rxvision.data import load_dataset, load_image
    from rxvision.locate.composite import sides_from_images

    refs = [load_image(s.path) for s in load_dataset(sample_dir / "manifest.csv").samples[:6]]
    sides = sides_from_images(refs)
    photo = Image.new("RGB", (480, 360), (170, 150, 120))
    for side, (x, y) in zip((sides[0], sides[5]), [(30, 40), (300, 200)], strict=True):
        pill = Image.fromarray(side, "RGBA")
        pill = pill.resize((100, round(100 * pill.height / pill.width)))
        photo.paste(pill, (x, y), pill)
    path = tmp_path / "two-pills.png"
    photo.save(path)
    driver = browser
    wait = _identify_on_page(driver, crop_server_url, "model crop", path)
    assert driver.find_element(By.ID, "found").is_displayed()
    assert "2 pill(s) boxed" in driver.find_element(By.ID, "found").get_attribute("aria-label")
    assert "2 pills found" in driver.find_element(By.ID, "status").text
    tabs = driver.find_elements(By.CSS_SELECTOR, "#pill-tabs button")
    assert [t.text for t in tabs] == ["Pill 1", "Pill 2"]
    assert [t.get_attribute("aria-pressed") for t in tabs] == ["true", "false"]
    read = driver.find_element(By.ID, "imprint-read").text  # what the OCR read, or that
    assert read.startswith(("Imprint read: ", "No imprint could be read"))  # it read nothing
    tabs[1].click()
    tabs = driver.find_elements(By.CSS_SELECTOR, "#pill-tabs button")
    assert [t.get_attribute("aria-pressed") for t in tabs] == ["false", "true"]
    # The canvas really drew the photo (not a blank box): its pixels vary.
    spread = driver.execute_script("""
        const c = document.getElementById('found');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) {
          lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); } return hi - lo;""")
    assert spread > 50
    # "Show why" draws the overlays of the chosen pill's crop.
    wait.until(ec.element_to_be_clickable((By.ID, "show-why"))).click()
    wait.until(lambda d: d.find_element(By.ID, "overlay").is_displayed())
    _assert_no_broken_images(driver)
    # A read that leaves a sibling's telling part unread: the page names the sibling.
    driver.execute_script("""renderVerdict({candidates: [{label: "00093-7678-06",
        probability: 0.98, facts: null}], abstain: true, unknown: false, retake: null,
        imprint: {read: "TV", decided_by: "appearance", changed: false,
                  also_fits: [{label: "00093-7677-86", imprint: "TV;7677"}]}}, false);""")
    read = driver.find_element(By.ID, "imprint-read").text
    assert "also fits 00093-7677-86 (TV 7677): check the whole imprint" in read, read
    assert "Not sure" in driver.find_element(By.ID, "verdict").text
    # An answer weighed with the photo's other pill says so, and how likely they are one.
    for p, tail in ((0.97, "same pill seen twice."), (0.2, "rests mostly on its own look).")):
        driver.execute_script(f"""renderVerdict({{candidates: [{{label: "00093-7678-06",
            probability: 0.99, facts: null}}], abstain: false, unknown: false, retake: null,
            same_photo: {{with_box: [1, 2, 3, 4], same_pill_probability: {p}}}}}, false);""")
        same = driver.find_element(By.CSS_SELECTOR, "#verdict .same-photo").text
        assert same.startswith("Weighed with the other pill in the photo") and same.endswith(
            tail), same
