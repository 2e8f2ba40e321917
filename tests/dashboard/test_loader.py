"""One refresh through the real query layer (what the page and the benchmark run)."""

from __future__ import annotations

import json

from dashboard.loader import DirectReader, ViewParams, load_view


def test_one_refresh_is_consistent_across_kpis_and_charts(filled_any_db):
    data = load_view(DirectReader(filled_any_db.db), ViewParams(keywords=("United",), range_label="1 h"))
    assert data.summary.n == 31 and data.summary.n_neg == 21
    assert list(data.trend.series) == ["United"]
    assert sum(p.n for p in data.trend.series["United"]) == 31
    pie = json.loads(data.figures["labels"].to_json())["data"][0]["values"]
    assert pie == [data.summary.n_neg, data.summary.n_neu, data.summary.n_pos]
    comparison = {t.keyword: t.n for t in data.comparison}
    assert comparison == {"United": 31, "Delta": 12}  # the comparison covers every keyword
    assert [c.term for c in data.counts] == ["United"]
    assert {t.keyword for t in data.tweets} == {"United"}


def test_no_selection_means_every_keyword(filled_db):
    data = load_view(DirectReader(filled_db.db), ViewParams(keywords=(), range_label="1 h"))
    assert data.summary.n == 43
    assert set(data.trend.series) == {"United", "Delta"}
    assert sum(p.n for s in data.trend.series.values() for p in s) == 43


def test_label_filter_and_untracked_term(filled_db):
    reader = DirectReader(filled_db.db)
    data = load_view(reader, ViewParams(keywords=("United", "Delta"), label="positive"))
    assert data.tweets and {t.label for t in data.tweets} == {"positive"}
    data = load_view(reader, ViewParams(keywords=("United", "Delta"), term="LUGGAGE"))
    assert data.term_keyword is None
    assert [t.text for t in data.tweets] == ["United lost my luggage again"]
    assert data.counts[-1].term == "LUGGAGE" and data.counts[-1].n == 1
