"""The VADER engine: VADER's own label/score rules, and brand names that are not opinions."""

from __future__ import annotations

import csv
import statistics

from pipeline.engines.vader import VaderEngine, neutralise


def test_label_follows_compound_thresholds():
    engine = VaderEngine()
    good, bad, flat = engine.classify(["I love this, great service!", "Awful. I hate it.", "The plane."])
    assert (good.label, bad.label, flat.label) == ("positive", "negative", "neutral")
    assert good.score >= 0.05 and bad.score <= -0.05 and abs(flat.score) < 0.05
    assert abs(good.p_neg + good.p_neu + good.p_pos - 1) < 0.01


def test_the_tracked_keyword_itself_carries_no_sentiment():
    engine = VaderEngine()
    # "united" is +1.8 in VADER's lexicon: unmasked, a plain question about @united reads positive.
    plain = "@united why not? Is it a law or a policy?"
    assert engine.classify([plain.replace("@united", "united")])[0].label == "positive"
    masked = engine.classify([plain, "United is late again", "#UNITED   airlines"],
                             subjects=["United", "United", "United"])
    assert [s.score for s in masked] == [0.0, 0.0, 0.0]
    assert neutralise("Flying Virgin\nAmerica, virgin america!", "Virgin America") == "Flying @user, @user!"
    # Other words stay: the opinion about the brand still counts.
    assert engine.classify(["I hate United"], subjects=["United"])[0].label == "negative"
    # A word that merely contains the keyword is left alone.
    assert neutralise("reunited at last", "United") == "reunited at last"


def test_no_brand_leans_positive_on_real_airline_tweets(airline_csv):
    """Measured before the fix: United agreed with the human labels on 0.312 of its tweets, the
    other airlines on 0.53-0.61, and its average score was +0.34 against -0.03..+0.15."""
    with airline_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    engine = VaderEngine()
    accuracy, average = {}, {}
    for keyword in sorted({r["keyword"] for r in rows}):
        mine = [r for r in rows if r["keyword"] == keyword]
        got = engine.classify([r["text"] for r in mine], subjects=[keyword] * len(mine))
        accuracy[keyword] = sum(s.label == r["label"] for s, r in zip(got, mine, strict=True)) / len(mine)
        average[keyword] = statistics.fmean(s.score for s in got)
    others = [a for k, a in accuracy.items() if k != "United"]
    assert accuracy["United"] >= min(others) - 0.05, accuracy
    assert average["United"] <= max(v for k, v in average.items() if k != "United"), average
