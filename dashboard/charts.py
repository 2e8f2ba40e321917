"""Plotly figure builders: plain data in, `go.Figure` out, no Streamlit. Each figure carries a
`uirevision` so that a live refresh with the same view keeps the user's zoom and hidden traces."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboard.state import LABEL_COLOURS, to_zone

LABEL_NAMES = ("negative", "neutral", "positive")
PALETTE = qualitative.Plotly + qualitative.D3
HEIGHT = 340
MARGIN = dict(l=10, r=10, t=40, b=10)


@dataclass(frozen=True)
class KeywordTotal:
    """One keyword's volume and count-weighted average score over a window."""

    keyword: str
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    avg_score: float | None


@dataclass(frozen=True)
class Threshold:
    """An alert threshold to draw on the trend chart (an enabled `avg_score_below` rule)."""

    value: float
    keyword: str | None  # None: the rule applies to every keyword
    rule_id: int | None = None


def keyword_colours(keywords: Iterable[str]) -> dict[str, str]:
    """A colour per keyword, assigned in sorted order so a keyword keeps its colour across charts."""
    ordered = sorted({k for k in keywords}, key=str.casefold)
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ordered)}


def totals(trend) -> list[KeywordTotal]:
    """Per-keyword totals from a `db.queries.Trend` (its buckets are count-weighted already)."""
    result = []
    for keyword, points in trend.series.items():
        n = sum(p.n for p in points)
        weighted = sum(p.avg_score * p.n for p in points if p.avg_score is not None)
        scored = sum(p.n for p in points if p.avg_score is not None)
        result.append(KeywordTotal(
            keyword=keyword, n=n, n_neg=sum(p.n_neg for p in points), n_neu=sum(p.n_neu for p in points),
            n_pos=sum(p.n_pos for p in points), avg_score=(weighted / scored) if scored else None,
        ))
    return result


def _local(moments: Sequence[datetime], zone: str) -> list[str]:
    """Wall-clock times in the chosen zone as ISO strings without offset: Plotly.js ignores offsets
    (it plots the wall-clock part), and strings are cheaper than datetimes to copy and serialise."""
    return [to_zone(m, zone).replace(tzinfo=None).isoformat() for m in moments]


# Figures are built as one dict and validated once by go.Figure(...): three times faster than
# add_trace/update_layout calls, each of which copies and re-validates the figure (see the bench).

def _layout(*, title: str, revision: str, zone: str | None = None, **extra) -> dict:
    layout = dict(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)),
        height=HEIGHT, margin=MARGIN, uirevision=revision,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        hovermode="x unified" if zone else "closest",
    )
    if zone:
        layout["xaxis"] = dict(title=dict(text=f"time ({zone})"))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _empty_note(text: str) -> dict:
    return dict(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                font=dict(size=14, color="#666"))


def trend_figure(trend, *, zone: str, thresholds: Sequence[Threshold] = (), revision: str,
                 colours: dict[str, str] | None = None) -> go.Figure:
    """Average score per bucket, a line per keyword, with the alert thresholds as dashed lines."""
    colours = colours or keyword_colours(trend.series)
    data = []
    any_points = False
    for keyword, points in trend.series.items():
        ys = [None if p.avg_score is None else round(p.avg_score, 4) for p in points]
        any_points = any_points or any(y is not None for y in ys)
        data.append(dict(
            type="scatter", x=_local([p.bucket for p in points], zone), y=ys, name=keyword,
            mode="lines+markers", connectgaps=False, line=dict(color=colours.get(keyword), width=2),
            marker=dict(size=4), customdata=[p.n for p in points],
            hovertemplate=f"{keyword}: %{{y:+.3f}} (%{{customdata}} tweets)<extra></extra>",
        ))
    shapes, annotations = [], []
    selected = set(trend.series)
    for t in thresholds:
        if t.keyword is not None and t.keyword not in selected:
            continue
        who = "every keyword" if t.keyword is None else t.keyword
        colour = colours.get(t.keyword, "#d62728") if t.keyword else "#d62728"
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=t.value, y1=t.value,
                           line=dict(color=colour, dash="dash", width=1.5)))
        annotations.append(dict(text=f"alert below {t.value:+.2f} ({who})", xref="paper", x=0, xanchor="left",
                                yref="y", y=t.value, yanchor="top", showarrow=False,
                                font=dict(size=11, color="#d62728")))
    if not any_points:
        annotations.append(_empty_note("No tweets in this window"))
    layout = _layout(title="Sentiment trend", revision=revision, zone=zone, shapes=shapes,
                     annotations=annotations,
                     yaxis=dict(range=[-1.05, 1.05], title=dict(text="average score"), zeroline=True,
                                zerolinecolor="#bbb"))
    return go.Figure(data=data, layout=layout)


def volume_figure(trend, *, zone: str, revision: str) -> go.Figure:
    """Tweets per bucket, all selected keywords together, stacked by label."""
    buckets: dict[datetime, list[int]] = {}
    for points in trend.series.values():
        for p in points:
            row = buckets.setdefault(p.bucket, [0, 0, 0])
            row[0] += p.n_neg
            row[1] += p.n_neu
            row[2] += p.n_pos
    order = sorted(buckets)
    xs = _local(order, zone)
    data = [
        dict(type="bar", x=xs, y=[buckets[b][i] for b in order], name=label,
             marker=dict(color=LABEL_COLOURS[label]), hovertemplate=f"{label}: %{{y}}<extra></extra>")
        for i, label in enumerate(LABEL_NAMES)
    ]
    annotations = [] if any(sum(v) for v in buckets.values()) else [_empty_note("No tweets in this window")]
    layout = _layout(title="Volume by label", revision=revision, zone=zone, barmode="stack", bargap=0.1,
                     annotations=annotations, legend=dict(traceorder="normal"),
                     yaxis=dict(title=dict(text=f"tweets per {_bucket_words(trend.bucket_seconds)}"),
                                rangemode="tozero"))
    return go.Figure(data=data, layout=layout)


def label_figure(summary, *, revision: str) -> go.Figure:
    """Negative / neutral / positive shares of the window."""
    values = [summary.n_neg, summary.n_neu, summary.n_pos]
    data = [dict(
        type="pie", labels=list(LABEL_NAMES), values=values, hole=0.5, sort=False, direction="clockwise",
        marker=dict(colors=[LABEL_COLOURS[label] for label in LABEL_NAMES]),
        textinfo="percent", hovertemplate="%{label}: %{value} tweets (%{percent})<extra></extra>",
    )]
    if not sum(values):
        annotations = [_empty_note("No tweets in this window")]
    else:
        annotations = [dict(text=f"{summary.n:,}<br>tweets", showarrow=False, x=0.5, y=0.5, xref="paper",
                            yref="paper", font=dict(size=14))]
    return go.Figure(data=data, layout=_layout(title="Label distribution", revision=revision,
                                               annotations=annotations))


def comparison_figure(items: Sequence[KeywordTotal], *, selected: Iterable[str], revision: str,
                      colours: dict[str, str] | None = None) -> go.Figure:
    """Share of voice and average score per keyword, side by side; the selected keywords stand out."""
    chosen = set(selected)
    rows = sorted((t for t in items if t.n), key=lambda t: -t.n)
    colours = colours or keyword_colours(t.keyword for t in items)
    total = sum(t.n for t in rows)
    names = [t.keyword for t in rows]
    opacity = [1.0 if t.keyword in chosen else 0.4 for t in rows]
    scores = [t.avg_score for t in rows]
    data = [
        dict(type="bar", orientation="h", y=names,
             x=[round(100 * t.n / total, 2) if total else 0 for t in rows], name="share of voice",
             xaxis="x", yaxis="y",
             marker=dict(color=[colours.get(k) for k in names], opacity=opacity),
             customdata=[t.n for t in rows],
             hovertemplate="%{y}: %{x:.1f} % (%{customdata} tweets)<extra></extra>"),
        dict(type="bar", orientation="h", y=names, x=[None if s is None else round(s, 4) for s in scores],
             name="avg score", xaxis="x2", yaxis="y2",
             marker=dict(color=[_score_colour(s) for s in scores], opacity=opacity),
             hovertemplate="%{y}: %{x:+.3f}<extra></extra>"),
    ]
    # Two side-by-side panels (what make_subplots(1, 2) lays out), written directly.
    left, right = [0.0, 0.41], [0.59, 1.0]
    annotations = [
        dict(text=text, x=sum(domain) / 2, xref="paper", xanchor="center", y=1.0, yref="paper",
             yanchor="bottom", showarrow=False, font=dict(size=13))
        for text, domain in (("Share of voice", left), ("Average score", right))
    ]
    if not rows:
        annotations.append(_empty_note("No tweets in this window"))
    layout = _layout(
        title="Keyword comparison", revision=revision, showlegend=False, annotations=annotations,
        xaxis=dict(domain=left, anchor="y", title=dict(text="% of tweets"), rangemode="tozero"),
        yaxis=dict(anchor="x", autorange="reversed"),
        xaxis2=dict(domain=right, anchor="y2", title=dict(text="average score"), range=[-1, 1]),
        yaxis2=dict(anchor="x2", autorange="reversed"),
    )
    layout["margin"] = dict(MARGIN, t=60)
    return go.Figure(data=data, layout=layout)


def _score_colour(score: float | None) -> str:
    if score is None:
        return "#cccccc"
    if score <= -0.05:
        return LABEL_COLOURS["negative"]
    if score >= 0.05:
        return LABEL_COLOURS["positive"]
    return LABEL_COLOURS["neutral"]


def _bucket_words(seconds: int) -> str:
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return "minute" if seconds == 60 else f"{seconds // 60} min"
    return f"{seconds} s"
