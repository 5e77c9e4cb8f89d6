"""The report as a reader sees it (issue 19): xlr.browser renders HTML in a real headless Chromium (Debian's
``chromium`` + ``chromedriver``; .ci/run installs them where missing), first on small hand-written pages, then the
smoke run's index.html: every figure loaded (no broken image), the first screen (1400x900) holds the four answers, and
its screenshot is kept under the run (``<run>/report/first_screen.png``).

Without chromium, chromedriver or selenium the browser tests skip with the reason, except under CI (env CI set), where
they fail: CI must not silently skip them."""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from conftest import SMOKE, Smoke

from xlr import browser
from xlr.errors import XlrError

WIDTH, HEIGHT = 1400, 900


@pytest.fixture
def need_browser() -> None:
    reason = browser.missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the browser test must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG, built by hand (no image library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xd0\x30\x30" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _page(tmp_path: Path, body: str, title: str = "hand-written") -> Path:
    path = tmp_path / "page.html"
    path.write_text(
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body style='margin:0'>{body}</body></html>", encoding="utf-8"
    )
    return path


# ----------------------------------------------------------------------------------------------------------------
# xlr.browser on hand-written pages


def test_png_size_reads_the_header(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(7, 3))
    assert browser.png_size(tmp_path / "a.png") == (7, 3)
    (tmp_path / "b.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(browser.BrowserFailed, match="not a PNG"):
        browser.png_size(tmp_path / "b.png")


def test_images_broken_and_good_are_told_apart(tmp_path, need_browser):
    good = _data_uri(_png(40, 20))
    bad_bytes = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a png").decode()
    page = _page(
        tmp_path,
        f"<img alt='good figure' src='{good}'>"
        "<img alt='missing file' src='no-such-figure.png'>"
        f"<img alt='corrupt figure' src='{bad_bytes}'>"
        "<img src='also-missing.png'>",  # no alt: named by its src
        title="images",
    )
    out = browser.render(page, tmp_path / "shot.png")
    assert out["title"] == "images"
    assert out["images"] == 4
    assert out["broken_images"] == ["missing file", "corrupt figure", "also-missing.png"], out["broken_images"]


def test_only_good_images_means_no_broken_ones(tmp_path, need_browser):
    page = _page(tmp_path, "".join(f"<img alt='fig {i}' src='{_data_uri(_png(10 + i, 10))}'>" for i in range(3)))
    out = browser.render(page, tmp_path / "shot.png")
    assert (out["images"], out["broken_images"]) == (3, [])


def test_answers_inside_and_below_the_first_screen(tmp_path, need_browser):
    page = _page(
        tmp_path,
        "<div id='first-screen'>"
        "<section class='answer' data-answer='1' style='height:200px'>top</section>"
        "<section class='answer' data-answer='2' style='height:200px'>still inside</section>"
        "</div>"
        "<div style='height:440px'></div>"  # answer 3 starts at 840 px and ends at 940 px: straddles the fold
        "<section class='answer' data-answer='3' style='height:100px'>straddles</section>"
        "<div style='height:1500px'></div>"
        "<section class='answer' data-answer='4' style='height:50px'>far below</section>"
        "<section class='answer' data-answer='5' style='display:none'>hidden</section>",
    )
    shot = tmp_path / "deep" / "dir" / "first.png"
    out = browser.render(page, shot)
    got = {a["answer"]: a for a in out["answers"]}
    assert list(got) == ["1", "2", "3", "4", "5"]
    assert {k: a["in_first_screen"] for k, a in got.items()} == {"1": True, "2": True, "3": False, "4": False, "5": False}
    assert (got["1"]["top"], got["1"]["bottom"], got["2"]["bottom"]) == (0, 200, 400)
    assert (got["3"]["top"], got["3"]["bottom"]) == (840, 940)
    assert got["4"]["top"] == 940 + 1500
    assert got["1"]["container"] == got["2"]["container"] == "first-screen" and got["3"]["container"] is None
    assert out["viewport"] == [WIDTH, HEIGHT]
    assert out["screenshot"] == shot and browser.png_size(shot) == (WIDTH, HEIGHT)


def test_screenshot_is_exactly_the_viewport_asked_for(tmp_path, need_browser):
    page = _page(tmp_path, "<div style='height:5000px;width:3000px;background:#eef'>a long, wide page</div>")
    out = browser.render(page, tmp_path / "a.png")
    assert browser.png_size(tmp_path / "a.png") == (WIDTH, HEIGHT)  # the first screen only, not the full page
    out = browser.render(page, tmp_path / "b.png", width=800, height=600)
    assert browser.png_size(tmp_path / "b.png") == (800, 600) and out["viewport"] == [800, 600]


# ----------------------------------------------------------------------------------------------------------------
# what is missing is named, with the fix (no browser needed)


def test_missing_chromium_is_named_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("XLR_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(browser.BrowserMissing) as info:
        browser.find_chromium()
    msg = str(info.value)
    assert "chromium not found" in msg and "apt-get install" in msg and "chromium chromium-driver" in msg and "XLR_CHROMIUM" in msg
    assert isinstance(info.value, XlrError)
    with pytest.raises(browser.BrowserMissing, match=r"chromedriver not found .*apt-get install -y chromium chromium-driver"):
        browser.find_chromedriver()


def test_env_overrides_must_point_at_an_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("XLR_CHROMEDRIVER", str(tmp_path / "nope"))
    with pytest.raises(browser.BrowserMissing, match="XLR_CHROMEDRIVER=.*nope.* is not an executable"):
        browser.find_chromedriver()
    exe = tmp_path / "my-chromium"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("XLR_CHROMIUM", str(exe))
    assert browser.find_chromium() == str(exe)


def test_missing_selenium_is_named_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "selenium", None)  # import selenium raises ImportError
    with pytest.raises(browser.BrowserMissing, match="selenium is not installed") as info:
        browser.locate()
    assert "apt-get install" in str(info.value)
    assert browser.missing() == str(info.value)


def test_a_missing_page_is_a_clear_error(tmp_path):
    with pytest.raises(browser.BrowserFailed, match="no such file to render"):
        browser.render(tmp_path / "absent.html", tmp_path / "shot.png")


# ----------------------------------------------------------------------------------------------------------------
# the smoke run's report, as a reader sees it


def test_smoke_report_first_screen(need_browser, smoke_run: Smoke, monkeypatch):
    """index.html of the shared smoke run (conftest.smoke_run), written as ``xlr run`` writes it, rendered at 1400x900:
    every figure loaded and the four answers (the ``<div id='first-screen'>`` of xlr.report.index_html) lie wholly on
    the first screen, whose screenshot is kept at ``<run>/report/first_screen.png``."""
    from xlr.config import load_params
    from xlr.report import index_html
    from xlr.runs import MANIFEST, Run

    monkeypatch.setenv("XLR_RUNS_DIR", str(smoke_run.runs))
    monkeypatch.setenv("XLR_REPORTS_DIR", str(smoke_run.reports))
    params = load_params(SMOKE)
    run = Run(smoke_run.root, json.loads((smoke_run.root / MANIFEST).read_text()))  # read only: Run.open would record a reopening
    report = smoke_run.root / "report"
    report.mkdir(exist_ok=True)
    index = report / "index.html"
    index.write_text(index_html(params, run, {}, []), encoding="utf-8")
    shot = report / "first_screen.png"

    out = browser.render(index, shot, width=WIDTH, height=HEIGHT)

    assert shot.is_file() and browser.png_size(shot) == (WIDTH, HEIGHT), (
        f"{shot}: {browser.png_size(shot) if shot.is_file() else 'missing'}"
    )
    assert out["images"] > 0, f"{index}: no figures at all"
    assert out["broken_images"] == [], (
        f"{index}: {len(out['broken_images'])} of {out['images']} figures did not load: {out['broken_images']}"
    )
    answers = [a["answer"] for a in out["answers"]]
    assert answers == ["1", "2", "3", "4"], (
        f"{index}: the first screen must hold <section class='answer' data-answer='1'>..'4'> in <div id='first-screen'>; "
        f"found data-answer {answers} (screenshot: {shot})"
    )
    outside = [a for a in out["answers"] if a["container"] != "first-screen" or not a["in_first_screen"]]
    assert not outside, (
        f"{index}: answers not wholly inside the first {WIDTH}x{HEIGHT} screen of <div id='first-screen'>: "
        + "; ".join(f"{a['answer']}: top {a['top']:.0f} bottom {a['bottom']:.0f} px, in #{a['container']}" for a in outside)
        + f" (screenshot: {shot})"
    )
