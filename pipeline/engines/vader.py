"""VADER, the offline engine: a lexicon and rules, no model download.

Label and score, VADER's own way: `score` is the compound score; label is positive when
compound >= 0.05, negative when compound <= -0.05, else neutral (the thresholds VADER's authors
recommend). The three probabilities are VADER's neg/neu/pos proportions; their argmax disagrees with
the compound-based label on most tweets (neu dominates), so it is not used as the label.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from pipeline.engines.base import Sentiment

THRESHOLD = 0.05


class VaderEngine:
    name = "vader"

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def classify(self, texts: Sequence[str]) -> list[Sentiment]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> Sentiment:
        s = self._analyzer.polarity_scores(text)
        compound = max(-1.0, min(1.0, float(s["compound"])))
        if compound >= THRESHOLD:
            label = "positive"
        elif compound <= -THRESHOLD:
            label = "negative"
        else:
            label = "neutral"
        return Sentiment(label=label, p_neg=float(s["neg"]), p_neu=float(s["neu"]),
                         p_pos=float(s["pos"]), score=compound)
