"""The web console at /ui in a real browser: Debian's headless chromium driven by Selenium
(through the system chromedriver: nothing is downloaded), against the API served by a real
uvicorn with the real Triton. Screenshots go to tmp, or to --ui-screenshots DIR (docs/ui)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.auth import key_hash
from core.settings import AuthSettings
from face_analytics_client import FaceAnalyticsClient
from tests.integration.conftest import api_settings, served_api

pytestmark = pytest.mark.triton

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
GROUP = "detection/images/friends_t1.jpg"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (make setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en-GB"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def shots(request, tmp_path) -> Path:
    out = request.config.getoption("--ui-screenshots")
    path = Path(out) if out else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(driver, what, timeout=WAIT_S):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the console re-renders lists in place: an element found a moment ago may be gone
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(what)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def screenshot(driver, path: Path) -> None:
    driver.execute_script("document.getElementById('notice').hidden = true")  # transient messages
    driver.save_screenshot(str(path))


def text_of(driver, selector) -> str:
    found = css(driver, selector)
    return found[0].text if found and found[0].is_displayed() else ""


def test_analyze_name_find_delete(browser, triton_settings, tmp_path, shared_data, shots):
    from selenium.webdriver.common.keys import Keys

    photo = shared_data / GROUP
    with served_api(api_settings(triton_settings, tmp_path, "sqlite")) as url:
        with FaceAnalyticsClient(url) as fa:
            expected = fa.analyze(photo)  # what /analyze says; the console's upload then matches the same people
        n = len(expected.faces)
        assert n >= 5

        browser.get(f"{url}/ui/")
        wait(browser, lambda d: css(d, "#dropzone"))
        css(browser, "#photo")[0].send_keys(str(photo))
        boxes = wait(browser, lambda d: css(d, "#stage .face") if len(css(d, "#stage .face")) == n else None)
        assert text_of(browser, "#analyze-message") == f"Successfully analyzed {n} face(s)"
        assert [b.get_attribute("data-person") for b in boxes] == [f.person_id for f in expected.faces]
        assert len(css(browser, "#faces-table tbody tr")) == n
        tags = [b.text for b in boxes]
        assert all("age " in t and "male" in t and "quality 0." in t for t in tags), tags
        screenshot(browser, shots / "analyze.png")

        # keyboard only: Tab-focusable box, Enter opens the dialog, type, Enter saves
        first = boxes[0]
        old_id = first.get_attribute("data-person")
        first.send_keys(Keys.ENTER)
        wait(browser, lambda d: css(d, "#face-dialog[open]"))
        name_input = css(browser, "#name-input")[0]
        assert browser.switch_to.active_element == name_input
        name_input.send_keys("Ada Console", Keys.ENTER)
        wait(browser, lambda d: "Ada Console" in text_of(d, "#notice"))
        named = css(browser, "#stage .face")[0]
        assert named.get_attribute("data-person").startswith("known_ada_console_")
        assert "Ada Console" in named.text and "known" in named.get_attribute("class")
        person_id = named.get_attribute("data-person")
        with FaceAnalyticsClient(url) as fa:
            assert fa.person(person_id).person_name == "Ada Console"
            assert fa.persons(search=old_id).total == 0  # the unknown became the known person

        # merge the second face into her (found by name in the dialog), confirming it
        second = css(browser, "#stage .face")[1]
        merged_id = second.get_attribute("data-person")
        second.click()
        wait(browser, lambda d: css(d, "#face-dialog[open]"))
        css(browser, "#merge-search")[0].send_keys("ada", Keys.ENTER)
        pick = wait(browser, lambda d: css(d, f'#merge-results .pick[data-person="{person_id}"]'))[0]
        pick.click()
        wait(browser, lambda d: css(d, "#confirm-dialog[open]"))
        css(browser, "#confirm-yes")[0].click()
        wait(browser, lambda d: "merged into" in text_of(d, "#notice"))
        assert [b.get_attribute("data-person") for b in css(browser, "#stage .face")][:2] == [person_id] * 2
        with FaceAnalyticsClient(url) as fa:
            assert len(fa.samples(person_id).samples) == 2 and fa.sightings(person_id).total == 4
            assert fa.persons(search=merged_id).total == 0

        # People: the list, then the search finds her
        css(browser, 'nav a[data-page="people"]')[0].click()
        wait(browser, lambda d: css(d, "#people-table tbody tr"))
        assert text_of(browser, "#people-count").endswith(f"of {n - 1}")  # two faces are one person now
        wait(browser, lambda d: css(d, "#people-table img.crop"))
        screenshot(browser, shots / "people.png")
        search = css(browser, "#people-search")[0]
        search.send_keys("ada cons", Keys.ENTER)
        wait(browser, lambda d: text_of(d, "#people-count") == "1–1 of 1")
        link = css(browser, "#people-table .person-link")[0]
        assert link.text == "Ada Console"
        link.click()
        wait(browser, lambda d: text_of(d, "#person-name") == "Ada Console")
        wait(browser, lambda d: css(d, ".person-head img.crop"))
        wait(browser, lambda d: len(css(d, "#samples li img.crop")) == 2)
        wait(browser, lambda d: len(css(d, "#sightings-table tbody tr")) == 4)
        screenshot(browser, shots / "person.png")

        # delete, with confirmation; cancelling first keeps her
        css(browser, "#delete-person")[0].click()
        wait(browser, lambda d: css(d, "#confirm-dialog[open]"))
        css(browser, "#confirm-no")[0].click()
        wait(browser, lambda d: not css(d, "#confirm-dialog[open]"))
        with FaceAnalyticsClient(url) as fa:
            assert fa.person(person_id)
        css(browser, "#delete-person")[0].click()
        wait(browser, lambda d: css(d, "#confirm-dialog[open]"))
        css(browser, "#confirm-yes")[0].click()
        wait(browser, lambda d: "Deleted Ada Console" in text_of(d, "#notice"))
        wait(browser, lambda d: css(d, "#people-search"))
        search = css(browser, "#people-search")[0]
        search.clear()
        search.send_keys("ada cons", Keys.ENTER)
        wait(browser, lambda d: text_of(d, "#people-count") == "0–0 of 0")
        with FaceAnalyticsClient(url) as fa:
            assert fa.persons(search="Ada Console").total == 0
            stats = fa.stats()

        # Dashboard: the /stats figures, both charts, health and models
        css(browser, 'nav a[data-page="dashboard"]')[0].click()
        wait(browser, lambda d: css(d, "#stats-figures") and css(d, "#health-status"))
        figures = [e.text for e in css(browser, "#stats-figures .value")]
        assert figures == [str(stats.known_faces), str(stats.unknown_faces), str(stats.total_detections),
                           str(stats.recent_detections_24h)]
        charts = css(browser, "svg.chart")
        assert len(charts) == 2
        assert [len(css(c, "rect.bar")) for c in charts] == [24, 30]
        assert text_of(browser, "#health-status") == "healthy"
        assert "face_multitask" in text_of(browser, "#models")
        assert len(css(browser, "#top-unknowns tbody tr")) == stats.unknown_faces
        screenshot(browser, shots / "dashboard.png")

        # a phone-width screen: nothing wider than the viewport
        browser.set_window_size(390, 844)
        try:
            browser.get(f"{url}/ui/#/analyze")
            css(browser, "#photo")[0].send_keys(str(photo))
            wait(browser, lambda d: len(css(d, "#stage .face")) == n)
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            screenshot(browser, shots / "analyze-phone.png")
        finally:
            browser.set_window_size(1280, 1000)


def test_api_key_prompt_and_clear_errors(browser, triton_settings, tmp_path, shared_data, shots):
    from selenium.webdriver.common.keys import Keys

    # this test alone fetches the assets twice and fails a key on purpose: more than the default
    # anonymous bucket (15) allows one address, which /health and the static files draw from
    auth = AuthSettings(enabled=True, key_hashes=key_hash("console-key"), anonymous_rate_limit_per_minute=600)
    with served_api(api_settings(triton_settings, tmp_path, "sqlite", auth=auth)) as url:
        for asset in ("/ui/", "/ui/app.js", "/ui/style.css"):  # the key is typed into the page itself
            r = httpx.get(url + asset)
            assert r.status_code == 200, f"{asset} must be served without an API key, got {r.status_code}"
        assert httpx.get(url + "/ui").status_code in (200, 307)
        browser.get(f"{url}/ui/#/dashboard")
        wait(browser, lambda d: css(d, "#key-dialog[open]"))
        wait(browser, lambda d: "missing X-API-Key header" in text_of(d, "#error-text"))
        css(browser, "#key-input")[0].send_keys("wrong", Keys.ENTER)
        wait(browser, lambda d: "invalid API key" in text_of(d, "#error-text"))
        key = wait(browser, lambda d: css(d, "#key-dialog[open] #key-input"))[0]
        key.clear()
        key.send_keys("console-key", Keys.ENTER)
        wait(browser, lambda d: text_of(d, "#health-status") == "healthy")
        assert browser.execute_script("return sessionStorage.getItem('faceAnalytics.apiKey')") == "console-key"
        assert not css(browser, "#error:not([hidden])")

        # a file that is no image: the API's own message, with its code and status
        not_image = tmp_path / "notes.jpg"
        not_image.write_text("these are not pixels")
        browser.get(f"{url}/ui/#/analyze")
        css(browser, "#photo")[0].send_keys(str(not_image))
        message = wait(browser, lambda d: text_of(d, "#error-text"))
        assert "HTTP 4" in message and "invalid_image" in message or "unsupported_media_type" in message, message
        css(browser, 'nav a[data-page="dashboard"]')[0].click()
        wait(browser, lambda d: text_of(d, "#health-status") == "healthy")
    # the server is gone: the console says so instead of failing silently
    css(browser, "#refresh")[0].click()
    wait(browser, lambda d: "Cannot reach the API" in text_of(d, "#error-text"))
    browser.execute_script("sessionStorage.clear()")
