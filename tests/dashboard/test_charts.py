"""Figure builders: the data in the figures is the data given, thresholds are drawn, zoom is kept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dashboard import charts


@dataclass
class P:
    bucket: datetime
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    avg_score: float | None


@dataclass
class T:
    bucket_seconds: int
    since: datetime
    until: datetime
    series: dict


@dataclass
class S:
    n: int
    n_neg: int
    n_neu: int
    n_pos: int


T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _trend():
    b = [T0 + timedelta(minutes=i) for i in range(3)]
    return T(60, T0, T0 + timedelta(minutes=3), {
        "United": [P(b[0], 4, 3, 1, 0, -0.5), P(b[1], 0, 0, 0, 0, None), P(b[2], 2, 0, 0, 2, 0.5)],
        "Delta": [P(b[0], 1, 0, 0, 1, 0.8), P(b[1], 1, 0, 1, 0, 0.0), P(b[2], 0, 0, 0, 0, None)],
    })


def test_trend_figure_has_a_line_per_keyword_and_the_thresholds():
    fig = charts.trend_figure(_trend(), zone="Europe/Paris", revision="r1", thresholds=[
        charts.Threshold(-0.4, "United"), charts.Threshold(-0.2, None), charts.Threshold(-0.9, "Other")])
    spec = json.loads(fig.to_json())
    names = [t["name"] for t in spec["data"]]
    assert names == ["United", "Delta"]
    assert spec["data"][0]["y"] == [-0.5, None, 0.5]  # an empty bucket is a gap, not a zero
    assert spec["data"][0]["x"][0].startswith("2026-03-01T13:00:00")  # shown in the chosen zone
    lines = sorted(s["y0"] for s in spec["layout"]["shapes"])
    assert lines == [-0.4, -0.2]  # the rule for a keyword not shown is not drawn
    assert spec["layout"]["uirevision"] == "r1"


def test_volume_figure_stacks_labels_over_keywords():
    spec = json.loads(charts.volume_figure(_trend(), zone="UTC", revision="r").to_json())
    by_label = {t["name"]: t["y"] for t in spec["data"]}
    assert by_label == {"negative": [3, 0, 0], "neutral": [1, 1, 0], "positive": [1, 0, 2]}
    assert spec["layout"]["barmode"] == "stack"


def test_label_and_comparison_figures():
    pie = json.loads(charts.label_figure(S(10, 5, 3, 2), revision="r").to_json())
    assert pie["data"][0]["values"] == [5, 3, 2]
    totals = charts.totals(_trend())
    united = next(t for t in totals if t.keyword == "United")
    assert united.n == 6 and abs(united.avg_score - (-0.5 * 4 + 0.5 * 2) / 6) < 1e-9
    comp = json.loads(charts.comparison_figure(totals, selected=["Delta"], revision="r").to_json())
    share, score = comp["data"]
    assert share["y"] == ["United", "Delta"] and share["x"] == [75.0, 25.0]
    assert score["x"][1] == 0.4


def test_empty_figures_say_so():
    empty = T(60, T0, T0, {})
    spec = json.loads(charts.trend_figure(empty, zone="UTC", revision="r").to_json())
    assert any("No tweets" in a["text"] for a in spec["layout"]["annotations"])
