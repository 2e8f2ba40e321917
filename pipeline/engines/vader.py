"""VADER, the offline engine: a lexicon and rules, no model download.

Label and score, VADER's own way: `score` is the compound score; label is positive when
compound >= 0.05, negative when compound <= -0.05, else neutral (the thresholds VADER's authors
recommend). The three probabilities are VADER's neg/neu/pos proportions; their argmax disagrees with
the compound-based label on most tweets (neu dominates), so it is not used as the label.

Brand names are not opinions. VADER's lexicon scores plain words, and some tracked brands are such
words: "united" is +1.8, so every tweet naming @united or United would lean positive (measured on the
airline export: 2,977 of United's 3,822 tweets came out positive against 492 by the human labels).
So before scoring, user mentions become `@user` (the same rule as the transformer's preprocessing),
and the tweet's own tracked keyword (`subjects`), as a word or hashtag, is replaced by a neutral token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from pipeline.engines.base import Sentiment
from pipeline.engines.preprocess import preprocess

THRESHOLD = 0.05
#: Stands in for a brand name: not in VADER's lexicon, so it carries no valence.
NEUTRAL_TOKEN = "@user"


@lru_cache(maxsize=1024)
def _subject_pattern(subject: str) -> re.Pattern[str]:
    # Whole words only, case-insensitive, with an optional '#' so #United goes too; the words of a
    # multi-word keyword may be joined by any whitespace.
    words = r"\s+".join(re.escape(w) for w in subject.split())
    return re.compile(rf"(?<!\w)#?{words}(?!\w)", re.IGNORECASE)


def neutralise(text: str, subject: str | None) -> str:
    """`text` with mentions as `@user` and the tracked keyword `subject` masked."""
    text = preprocess(text)
    if subject and subject.strip():
        text = _subject_pattern(subject.strip()).sub(NEUTRAL_TOKEN, text)
    return text


class VaderEngine:
    name = "vader"

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def classify(self, texts: Sequence[str], *,
                 subjects: Sequence[str | None] | None = None) -> list[Sentiment]:
        if subjects is None:
            subjects = [None] * len(texts)
        return [self._one(neutralise(text, subject)) for text, subject in zip(texts, subjects, strict=True)]

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
