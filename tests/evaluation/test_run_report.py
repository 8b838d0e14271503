"""report.html: self-contained, escaped, and loaded in a real browser (headless Chromium)."""

import base64
import io
import os
import re
import shutil

import pytest
from PIL import Image

from charfeat.evaluation.metrics import SCALAR_METRICS
from charfeat.evaluation.plots import DISPLAY_WIDTH
from charfeat.evaluation.report import RunReport, render
from trained_run import trained_run

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def png(tmp_path, name: str):
    Image.new("RGB", (20, 10), "red").save(tmp_path / name)
    return tmp_path / name


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "JPEG")
    return buffer.getvalue()


def test_the_page_is_self_contained_and_escapes_the_data(tmp_path):
    hostile = '<script>alert("x")</script>'
    results = {"trained": {**dict.fromkeys(SCALAR_METRICS, 0.5), "per_class_precision_at_1": {hostile: 0.25}},
               "trained_ci95": {m: [0.4, 0.6] for m in SCALAR_METRICS}, "chance": dict.fromkeys(SCALAR_METRICS, 0.1)}
    suspect = {"rank": 1, "id": hostile, "filename": "a.jpg", "label": hostile, "suggested_label": "b",
               "agreement": 0.1, "neighbours": [{"id": "n", "filename": "n.jpg", "label": "b", "cosine": 0.9}]}
    page = render(RunReport(heading="trained model, epoch 2, val split", notes=["note"], results=results,
                            class_names=[hostile], counts=[3], plots={"t-SNE: x": png(tmp_path, "t.png")},
                            suspects=[suspect], thumbnails={"a.jpg": jpeg(), "n.jpg": jpeg()}))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "0.500 ±0.10" in page and "<td>0.250</td>" in page  # the interval, the per-class value
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 3
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<link" not in page and "http" not in page  # nothing fetched from elsewhere


def chromium_or_skip():
    """The browser, or a skip on a developer's machine without it (never under .ci/run, which sets
    CHARFEAT_REQUIRE_BROWSER=1: there it must run)."""
    required = os.environ.get("CHARFEAT_REQUIRE_BROWSER") == "1"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):
        if required:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")


@pytest.mark.slow
def test_the_training_runs_report_loads_in_a_browser_with_every_image(cache_dir, tmp_path):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    page_path = trained_run(cache_dir) / "report.html"
    shutil.copy(page_path, tmp_path / "report.html")  # opened from anywhere: nothing beside it is needed
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.complete])")
            plot_widths = page.evaluate("Array.from(document.querySelectorAll('img.plot'))"
                                        ".map(i => i.getBoundingClientRect().width)")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot of the run report: {screenshot}")
    assert errors == []
    assert len(images) > 10 and all(width > 0 and complete for _, width, complete in images), images
    assert plot_widths == [DISPLAY_WIDTH] * 4  # t-SNE, neighbours, confusion, curves
    assert headings == ["Metrics", "Precision@1 per class", "Plots", "Suspect labels"]
    with Image.open(screenshot) as shot:
        assert shot.width == 1000 and shot.height > 2000
