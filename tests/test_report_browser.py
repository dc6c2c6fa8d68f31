"""report.html in a real headless Chromium: no errors, no network, every figure laid out, a screenshot.

Uses the system Chromium (``apt-get install chromium``) through playwright's ``executable_path``;
no browser is downloaded. Skips, saying why, when either is missing. The first screen is saved to
``tests/artifacts/report-first-screen.png`` for a human to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunewise.costs import DEFAULT_PRICES
from tunewise.decision import decide
from tunewise.report import render_report

from .test_report import build_results, write_data

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no system Chromium on PATH (apt-get install chromium; .ci/run does it when apt is available)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

ARTIFACTS = Path(__file__).parent / "artifacts"
PLOTS = ("pareto", "curves", "per-label", "latency")
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    results, spec, tests = build_results(write_data(tmp))
    return render_report(results, decide(results, spec, DEFAULT_PRICES), spec=spec, test_examples=tests,
                         out_dir=tmp / "out").html


def test_report_renders_cleanly_in_chromium(report_html):
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        except Exception as exc:  # a Chromium this playwright cannot drive: the environment, not the report
            pytest.skip(f"playwright could not launch {CHROMIUM}: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report_html.as_uri(), wait_until="load")
            boxes = {name: page.locator(f"#plot-{name}").bounding_box() for name in PLOTS}
            verdict = page.locator("#verdict").bounding_box()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-first-screen.png"))
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    for name, box in boxes.items():
        assert box is not None and box["width"] > 100 and box["height"] > 50, (name, box)
    assert verdict is not None and verdict["y"] < VIEWPORT["height"] / 2  # the verdict opens the first screen
    assert overflow <= 0, "the page must not scroll sideways at 1280 px"
    assert (ARTIFACTS / "report-first-screen.png").stat().st_size > 10_000
