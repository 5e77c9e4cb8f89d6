"""The report as a reader sees it (issue 19): an HTML file rendered in a real headless Chromium through Selenium.

:func:`render` opens a file (``file://``), waits until it and its images have loaded, and measures what a reader
sees on the first screen: how many images there are and which are broken, where each ``[data-answer]`` element sits
and whether it lies wholly inside the first screen, and a PNG screenshot of exactly that screen.

The browser is Debian's ``chromium`` driven by its ``chromedriver`` (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them where missing). Both are found on PATH (``XLR_CHROMIUM`` / ``XLR_CHROMEDRIVER`` override)
and handed to Selenium explicitly, so Selenium Manager never looks for (or downloads) a driver. A missing piece is
:class:`BrowserMissing`, naming it and the fix. Selenium is imported only inside :func:`render`: importing this module
needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from xlr.errors import XlrError
from xlr.files import atomic_write_bytes

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
INSTALL_FIX = "Fix: apt-get install -y chromium chromium-driver (Debian; .ci/run does this), and pip install -e '.[dev]' for selenium"
LOAD_TIMEOUT_S = 60

# What the page holds once loaded, measured in CSS px relative to the top-left of the document (the page is at the top,
# so that is also the first screen's top-left).
_MEASURE_JS = """
const imgs = Array.from(document.images);
return {
  title: document.title,
  images: imgs.length,
  broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || (i.getAttribute('src') || '').slice(0, 80)),
  answers: Array.from(document.querySelectorAll('[data-answer]')).map(e => {
    const r = e.getBoundingClientRect();
    const holder = e.parentElement ? e.parentElement.closest('[id]') : null;
    return {answer: e.getAttribute('data-answer'), top: r.top + window.scrollY, bottom: r.bottom + window.scrollY,
            left: r.left + window.scrollX, right: r.right + window.scrollX, container: holder ? holder.id : null};
  }),
  viewport: [window.innerWidth, window.innerHeight],
};
"""
_LOADED_JS = "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete);"


class BrowserMissing(XlrError, RuntimeError):
    """Chromium, chromedriver or selenium is not installed (the message names which, and the fix)."""


class BrowserFailed(XlrError, RuntimeError):
    """The browser started but could not render the page (the message names the file and what went wrong)."""


def _find(kind: str, env: str, names: tuple[str, ...]) -> str:
    override = os.environ.get(env)
    if override:
        path = shutil.which(override)
        if path is None:
            raise BrowserMissing(f"{env}={override!r} is not an executable file. Fix: point {env} at the {kind} binary, or unset it.")
        return path
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing(f"{kind} not found (looked on PATH for {', '.join(names)}; {env} overrides). {INSTALL_FIX}")


def find_chromium() -> str:
    return _find("chromium", "XLR_CHROMIUM", CHROMIUM_NAMES)


def find_chromedriver() -> str:
    return _find("chromedriver", "XLR_CHROMEDRIVER", CHROMEDRIVER_NAMES)


def locate() -> tuple[str, str]:
    """(chromium, chromedriver) paths, after checking that selenium imports; :class:`BrowserMissing` otherwise."""
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        raise BrowserMissing(f"the Python package selenium is not installed ({e}). {INSTALL_FIX}") from e
    return find_chromium(), find_chromedriver()


def missing() -> str | None:
    """Why :func:`render` cannot run here (the :class:`BrowserMissing` message), or None when it can."""
    try:
        locate()
    except BrowserMissing as e:
        return str(e)
    return None


def _driver(chromium: str, chromedriver: str, width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    try:  # the viewport exactly width x height at 1 device px per CSS px, whatever the window's decorations take
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        )
        driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    except BaseException:
        driver.quit()
        raise
    return driver


def render(index_html: Path, screenshot: Path, width: int = 1400, height: int = 900) -> dict[str, Any]:
    """Open ``index_html`` in headless Chromium with a ``width`` x ``height`` viewport, wait for the page and its
    images, write the first screen as a PNG (exactly ``width`` x ``height``) to ``screenshot`` and return

    - ``title``: the document's title
    - ``images``: how many ``<img>`` the page has
    - ``broken_images``: the alt (else the first 80 characters of src) of each image that did not load
      (not ``complete && naturalWidth > 0``)
    - ``answers``: for each ``[data-answer]`` element, in document order, ``{"answer": its data-answer value, "top",
      "bottom", "left", "right": its box in CSS px from the document's top-left, "container": the id of the nearest
      enclosing element that has one (None: none), "in_first_screen": True when the box is non-empty and wholly inside
      the first width x height screen}``
    - ``viewport``: [innerWidth, innerHeight] as the page saw them
    - ``screenshot``: the PNG's path
    """
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    index_html, screenshot = Path(index_html).resolve(), Path(screenshot)
    if not index_html.is_file():
        raise BrowserFailed(f"{index_html}: no such file to render. Fix: write the report first.")
    chromium, chromedriver = locate()
    try:
        driver = _driver(chromium, chromedriver, width, height)
    except WebDriverException as e:
        raise BrowserFailed(
            f"chromium ({chromium}) with chromedriver ({chromedriver}) did not start: {e.msg or e}. "
            "Fix: their versions must match (install both from the same source: apt-get install chromium chromium-driver)."
        ) from e
    try:
        try:
            driver.get(index_html.as_uri())
            WebDriverWait(driver, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(_LOADED_JS))
        except TimeoutException as e:
            raise BrowserFailed(f"{index_html}: the page or its images did not finish loading within {LOAD_TIMEOUT_S} s") from e
        driver.execute_script("window.scrollTo(0, 0);")
        out = driver.execute_script(_MEASURE_JS)
        png = driver.get_screenshot_as_png()
    except WebDriverException as e:
        raise BrowserFailed(f"{index_html}: rendering failed in chromium ({chromium}): {e.msg or e}") from e
    finally:
        driver.quit()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(screenshot, png)
    for a in out["answers"]:
        a["in_first_screen"] = bool(
            a["bottom"] > a["top"]
            and a["right"] > a["left"]
            and a["top"] >= 0
            and a["left"] >= 0
            and a["bottom"] <= height
            and a["right"] <= width
        )
    out["screenshot"] = screenshot
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header (no image library needed)."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise BrowserFailed(f"{path}: not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
