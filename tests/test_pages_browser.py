"""The neuron pages in a real browser: Debian's chromium and chromium-driver, driven by selenium.

It opens the index, filters and searches it, follows a link to a neuron page, and checks that the
examples and the histogram rendered, that the console has no error, that no link or image is broken,
and takes screenshots (into the test's tmp folder). Skipped, with the reason, where chromium,
chromedriver or selenium is missing (``apt-get install chromium chromium-driver``; ``pip install
selenium``). Set ``NEURODIFF_PAGES=STUDY/pages`` to check an already built site (e.g. the default
study's) as well as the tiny one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from interp.pages import IndexLimits, build_pages
from pages_helpers import build_tiny_study

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium/chromedriver on PATH "
                                "(apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _sites() -> list:
    sites = [pytest.param(None, id="tiny")]
    if os.environ.get("NEURODIFF_PAGES"):
        sites.append(pytest.param(Path(os.environ["NEURODIFF_PAGES"]), id="given"))
    return sites


@pytest.fixture(scope="module", params=_sites())
def pages(request, tmp_path_factory) -> Path:
    if request.param is not None:
        return request.param
    torch.set_num_threads(2)
    study = build_tiny_study(tmp_path_factory.mktemp("browser") / "study")
    return build_pages(study, limits=IndexLimits(flagged=8, screen=3, per_class=2)).out_dir


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _broken(driver) -> list[str]:
    """Links to local files that do not exist, and images that did not load."""
    hrefs = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
    missing = [h for h in hrefs if urlparse(h).scheme == "file" and not Path(unquote(urlparse(h).path)).exists()]
    remote = [h for h in hrefs if urlparse(h).scheme not in ("file", "")]
    images = driver.execute_script("return [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                   ".map(i => i.src)")
    return missing + remote + images


def _rows(driver) -> list[list[str]]:
    return driver.execute_script("return [...document.querySelectorAll('#body tr')].map(r => [...r.cells]"
                                 ".map(c => c.textContent))")


def test_index_filters_and_links_to_a_rendered_neuron_page(browser, pages, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get((pages / "index.html").as_uri())
    rows = _rows(browser)
    assert len(rows) > 3 and browser.find_element(By.ID, "count").text == f"{len(rows)} of {len(rows)} neurons"
    assert _errors(browser) == [] and _broken(browser) == []
    browser.save_screenshot(str(tmp_path / "index.png"))

    layer = rows[-1][1]
    Select(browser.find_element(By.ID, "layer")).select_by_visible_text(layer)
    filtered = _rows(browser)
    assert {r[1] for r in filtered} == {layer} and len(filtered) == sum(r[1] == layer for r in rows) < len(rows)
    Select(browser.find_element(By.ID, "layer")).select_by_index(0)
    chosen = [r for r in rows if "chosen" in r[5].split()]
    target = chosen[0][0] if chosen else rows[0][0]
    browser.find_element(By.ID, "search").send_keys(target)
    assert [r[0] for r in _rows(browser)] == [target]
    browser.find_element(By.LINK_TEXT, target).click()
    WebDriverWait(browser, 20).until(lambda driver: driver.title == f"neuron {target}")

    assert browser.find_element(By.TAG_NAME, "h1").text == f"Neuron {target}"
    for model in ("base", "merged"):
        shaded = browser.find_elements(By.CSS_SELECTOR, f".ex[data-model='{model}'] .tok")
        assert shaded and all(s.size["width"] > 0 for s in shaded[:5])
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.hist rect")
    assert bars and max(b.size["height"] for b in bars) > 20
    output_tokens = browser.execute_script("return [...document.querySelectorAll('h2')].find(h => h.textContent"
                                           ".startsWith('Output tokens')).nextElementSibling.nextElementSibling"
                                           ".querySelectorAll('tr').length")
    assert output_tokens == 11  # a header and ten tokens in each column
    assert _errors(browser) == [] and _broken(browser) == []
    browser.save_screenshot(str(tmp_path / "neuron.png"))
    assert (tmp_path / "neuron.png").stat().st_size > 10_000
