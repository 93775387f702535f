"""The report pages in a real headless browser with the network cut off: Debian's chromium driven by
Playwright (tools/bootstrap.sh installs both). Every page loads, every chart renders an SVG with
marks, nothing is logged to the console as an error, and no request leaves file://. A screenshot of
each page is kept under the test's tmp dir (its path is printed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # no network: every connection goes to a closed local port, every host name fails to resolve
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
LOCAL = ("file:", "data:", "blob:", "about:")


def check_pages(folder: Path, shots: Path, timeout_ms: int = 30000) -> dict[str, dict]:
    """Open every page of ``folder``; return, per page, its charts' mark counts, console errors and
    the requests that left the local file system."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(pip install -r requirements.txt)")
    out = {}
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(shots / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 900}, offline=True)
        ctx.route(lambda url: not url.startswith(LOCAL), lambda route: route.abort())
        for path in sorted(folder.glob("*.html")):
            page = ctx.new_page()
            errors, remote = [], []
            page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
            page.on("request", lambda r, rem=remote: rem.append(r.url) if not r.url.startswith(LOCAL) else None)
            page.goto(path.as_uri(), wait_until="load")
            n = page.locator("div.chart").count()
            if n:
                try:
                    page.wait_for_function("() => [...document.querySelectorAll('div.chart')]"
                                           ".every(d => d.querySelector('svg .role-mark'))", timeout=timeout_ms)
                except playwright.TimeoutError:
                    errors.append(f"not every chart rendered within {timeout_ms} ms")
            marks = page.evaluate("() => [...document.querySelectorAll('div.chart')].map(d => "
                                  "[d.dataset.name, d.querySelectorAll('svg .role-mark > *').length])")
            shot = shots / f"{path.stem}.png"
            page.screenshot(path=str(shot), full_page=True)
            out[path.name] = {"charts": n, "marks": dict(marks), "errors": errors, "remote": remote, "shot": shot,
                              "title": page.title()}
            page.close()
        ctx.close()
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: run tools/bootstrap.sh as root "
                                               "(apt-get install -y chromium), then the browser test runs")
def test_every_page_renders_offline_in_chromium(toy, tmp_path_factory):
    root, _, _ = toy
    shots = tmp_path_factory.mktemp("screenshots")
    pages = check_pages(root / "report", shots)
    assert {"index.html", "frontier.html", "recommendations.html", "runs.html", "method-warmstart.html",
            "scores-toy.html"} <= set(pages)
    for name, p in pages.items():
        assert p["errors"] == [], (name, p["errors"])
        assert p["remote"] == [], (name, p["remote"])
        assert all(n > 0 for n in p["marks"].values()), (name, p["marks"])
        assert p["shot"].stat().st_size > 10_000 and "reuse report" in p["title"]
    assert pages["index.html"]["charts"] >= 1 and pages["frontier.html"]["charts"] >= 1
    assert pages["method-kd.html"]["charts"] >= 4  # accuracy, curves, time-to-accuracy x2, sweep, per class
    print(f"\nscreenshots of the report pages: {shots}  (index: {pages['index.html']['shot']})")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_check_catches_a_broken_page(tmp_path):
    """A chart whose spec is broken and an image from the network are both reported."""
    from reuse.report.html import Page

    page = Page("broken.html", "broken")
    page.raw('<img src="http://example.com/x.png">')
    page.raw('<div class="chart" id="c0" data-name="bad"></div>')
    page.specs["c0"] = {"mark": "point", "data": {"url": "https://example.com/data.json"},
                        "encoding": {"x": {"field": "a", "type": "quantitative"}}}
    page.write(tmp_path / "pages", [("broken.html", "broken")])
    p = check_pages(tmp_path / "pages", tmp_path / "shots", timeout_ms=3000)["broken.html"]
    assert "http://example.com/x.png" in p["remote"] and "https://example.com/data.json" in p["remote"]
    assert p["errors"] and p["marks"] == {"bad": 0}
