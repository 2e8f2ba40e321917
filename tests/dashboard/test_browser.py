"""The dashboard in a real browser: `streamlit run dashboard/app.py` on a free port over a database
filled by replaying the real airline tweets (the replay producer's stream, scored by VADER,
written through db.writes), loaded in
headless Chromium through Playwright.

It checks that the Plotly charts render (SVG), hold data for the searched keyword, change when
another keyword is typed, and that the live fragment shows tweets written while the page is open.
A screenshot is saved to artifacts/dashboard.png (docs/dashboard.png is a copy of a current one).

In CI (CI=true) a missing Chromium fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dashboard.conftest import ROOT, analyzed
from tests.services import free_port, unavailable

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AIRLINES = ["United", "US Airways", "American", "Southwest", "JetBlue", "Virgin America"]
TIMEOUT_MS = 60_000

# The traces of every Plotly chart on the page: name and how many non-empty values each holds.
CHART_DATA_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd =>
  ({title: ((gd.layout && gd.layout.title && gd.layout.title.text) || '').replace(/<[^>]+>/g, ''),
    traces: (gd.data || []).map(t => ({name: t.name || '',
      values: ((t.type === 'pie' ? t.values : (t.orientation === 'h' ? t.x : t.y)) || [])
        .filter(v => v !== null && v !== undefined)}))}))"""


@pytest.fixture
def chromium() -> str:
    """The Chromium binary, checked before the (slower) data replay and server start."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        unavailable(f"playwright is not installed: {exc}")
    return CHROMIUM


def replay_airline_tweets(db, path: Path, settings) -> int:
    """The real export played through the project's replay producer (its parsing, ordering and ids,
    at full speed with the original timestamps), scored by VADER, written through db.writes."""
    import threading

    from db.writes import write_tweets
    from pipeline.contracts import AnalyzedTweet, RawTweet
    from pipeline.engines.vader import VaderEngine
    from pipeline.producers.replay import read_rows, replay_tweets
    from pipeline.text import clean_text

    engine = VaderEngine()
    stream = replay_tweets(read_rows(path, settings), settings, threading.Event(), speed=None, keyword=None)
    raw = [t for t in stream if isinstance(t, RawTweet)]
    now = datetime.now(UTC)
    inserted = 0
    for start in range(0, len(raw), 1000):
        batch = raw[start:start + 1000]
        scores = engine.classify([clean_text(t.text, max_chars=settings.max_text_chars) for t in batch])
        tweets = [
            AnalyzedTweet(**t.model_dump(), label=s.label, p_neg=s.p_neg, p_neu=s.p_neu, p_pos=s.p_pos,
                          score=s.score, engine=engine.name, processed_at=now)
            for t, s in zip(batch, scores, strict=True)
        ]
        inserted += write_tweets(db, tweets)
    return inserted


@pytest.fixture
def replayed_db(chromium, make_settings, tmp_path, airline_csv):
    from db.database import open_database

    url = f"sqlite:///{tmp_path / 'replay.db'}"
    settings = make_settings(database_url=url, keywords=AIRLINES)
    db = open_database(settings)
    assert replay_airline_tweets(db, airline_csv, settings) > 14_000  # 14,485 distinct ids
    from api.alerts.rules import AlertRuleCreate
    from db.alerts import create_rule

    # A threshold rule for every keyword: the trend chart draws it.
    create_rule(db, rule=AlertRuleCreate(keyword=None, metric="avg_score_below", threshold=-0.5))
    yield url, db
    db.close()


@pytest.fixture
def dashboard_server(replayed_db, tmp_path):
    url, _db = replayed_db
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "KEYWORDS": ",".join(AIRLINES), "DASHBOARD_TZ": "UTC",
           "DASHBOARD_REFRESH_SECONDS": "2", "DASHBOARD_PASSWORD": "", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _charts(page) -> dict[str, list[dict]]:
    return {c["title"]: c["traces"] for c in page.evaluate(CHART_DATA_JS)}


def _wait_for(page, predicate, what: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = _charts(page)
        if predicate(last):
            return last
        page.wait_for_timeout(300)
    raise AssertionError(f"timed out waiting for {what}; charts were {last}")


def _trend_names(charts: dict) -> set[str]:
    return {t["name"] for t in charts.get("Sentiment trend", []) if t["values"]}


def _tweets_kpi(page) -> int:
    first = page.locator('[data-testid="stMetric"]').first
    text = first.locator('[data-testid="stMetricValue"]').inner_text()
    return int(text.replace(",", ""))


def _search(page, term: str) -> dict:
    """Type `term` in the sidebar search box and wait until the trend chart shows only it."""
    box = page.get_by_role("textbox", name="Search a keyword", exact=True)
    box.fill(term)
    box.press("Enter")
    try:
        return _wait_for(page, lambda c: _trend_names(c) == {term}, f"the {term} trend", timeout_s=30)
    except AssertionError as exc:
        chips = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
        raise AssertionError(f"{exc}; search box holds {box.input_value()!r}, keywords {chips!r}") from exc


def test_dashboard_in_chromium(chromium, dashboard_server, replayed_db, tmp_path):
    from playwright.sync_api import sync_playwright

    _url, db = replayed_db
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            # Tall enough for the whole page: Streamlit scrolls inside its own container, so a
            # full-page screenshot shows only what fits the viewport.
            page = browser.new_page(viewport={"width": 1500, "height": 2600})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(dashboard_server, wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot .main-svg")

            # The export is from 2015: the live window is empty and the page offers the latest one.
            page.get_by_label("Time range").click()
            page.get_by_role("option", name="7 days").click()
            page.get_by_role("button", name="Show the 7 days up to it").click()
            page.get_by_role("button", name="Back to now").wait_for()

            charts = _search(page, "Southwest")
            assert all(len(t["values"]) > 0 for t in charts["Volume by label"]), charts["Volume by label"]
            assert sum(charts["Label distribution"][0]["values"]) > 2000  # Southwest has 2,420 tweets
            page.wait_for_selector(".js-plotly-plot .main-svg .scatterlayer .trace")
            # The alert threshold is drawn on the trend chart (an SVG shape with its label).
            page.get_by_text("alert below -0.50 (every keyword)").wait_for()
            southwest_tweets = _tweets_kpi(page)

            charts = _search(page, "Virgin America")  # another keyword: the charts change
            virgin_tweets = _tweets_kpi(page)
            assert 0 < virgin_tweets < southwest_tweets  # Virgin America has 504 tweets

            # Zoom into the trend chart with the mouse, as a user would (a box drag on the plot).
            trend = page.locator(".js-plotly-plot").first
            box = trend.locator(".nsewdrag").first.bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.3, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
            page.mouse.up()
            zoomed = trend.evaluate("gd => gd.layout.xaxis.range")
            assert trend.evaluate("gd => gd.layout.xaxis.autorange") is False, zoomed
            trend.evaluate("gd => { gd.__spBeforeRefresh = true }")

            # New tweets arrive while the page is open: the live fragment shows them without a reload.
            from db.queries import latest_tweet_time
            from db.writes import write_tweets

            latest = latest_tweet_time(db, keywords=["Virgin America"])
            fresh = [
                analyzed(id=f"live-{i}", keyword="Virgin America", text=f"@VirginAmerica live tweet {i}",
                         created_at=latest + timedelta(seconds=10 + i), label="negative", score=-0.9)
                for i in range(40)
            ]
            assert write_tweets(db, fresh) == 40
            deadline = time.monotonic() + 30
            while _tweets_kpi(page) != virgin_tweets + 40:
                assert time.monotonic() < deadline, f"KPI stayed at {_tweets_kpi(page)}"
                page.wait_for_timeout(300)

            # The refresh redrew the charts with the new data and kept the user's zoom.
            deadline = time.monotonic() + 10
            while (current := page.locator(".js-plotly-plot").first.evaluate(
                    "gd => gd.layout.xaxis && gd.layout.xaxis.range")) != zoomed:
                assert time.monotonic() < deadline, f"zoom lost: {current} != {zoomed}"
                page.wait_for_timeout(200)
            # ... on the chart drawn from the new data, not the one that was zoomed.
            assert page.locator(".js-plotly-plot").first.evaluate("gd => !gd.__spBeforeRefresh")

            # Paused, the page stops refreshing; unpaused, it catches up.
            page.get_by_text("Pause live updates").click()
            page.wait_for_timeout(1500)  # the full rerun the toggle causes
            assert _tweets_kpi(page) == virgin_tweets + 40
            more = [
                analyzed(id=f"paused-{i}", keyword="Virgin America", text=f"@VirginAmerica paused {i}",
                         created_at=latest + timedelta(seconds=60 + i), label="positive", score=0.8)
                for i in range(5)
            ]
            assert write_tweets(db, more) == 5
            page.wait_for_timeout(5000)  # 2.5 refresh intervals
            assert _tweets_kpi(page) == virgin_tweets + 40
            page.get_by_text("Pause live updates").click()
            deadline = time.monotonic() + 30
            while _tweets_kpi(page) != virgin_tweets + 45:
                assert time.monotonic() < deadline, f"KPI stayed at {_tweets_kpi(page)} after unpausing"
                page.wait_for_timeout(300)

            # The CSV download holds what the table shows, newest first, text intact.
            with page.expect_download() as info:
                page.get_by_role("button", name="Download CSV").click()
            rows = list(csv.DictReader(Path(info.value.path()).read_text(encoding="utf-8-sig").splitlines()))
            assert rows and {r["keyword"] for r in rows} == {"Virgin America"}
            assert rows[0]["text"] == "@VirginAmerica paused 4" and rows[0]["label"] == "positive"
            # ... with each tweet's source, so replayed tweets are told from mock ones.
            assert {r["source"] for r in rows} == {"replay"}

            # A double-click resets the zoom (and the page forgets it).
            page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.dblclick()
            page.wait_for_function("() => document.querySelector('.js-plotly-plot').layout.xaxis.autorange")

            page.mouse.move(5, 5)  # no hover label in the screenshot
            page.wait_for_timeout(500)
            shot = ROOT / "artifacts" / "dashboard.png"
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
