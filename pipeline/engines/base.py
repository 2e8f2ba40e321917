"""The sentiment engine interface every engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.contracts import Label


@dataclass(frozen=True, slots=True)
class Sentiment:
    """One text's sentiment. Each engine documents how it derives `label` and `score`."""

    label: Label
    p_neg: float
    p_neu: float
    p_pos: float
    score: float


class SentimentEngine(Protocol):
    #: Stored with every row, e.g. "vader" or "transformer:cardiffnlp/twitter-roberta-base-...".
    name: str

    def classify(self, texts: Sequence[str], *,
                 subjects: Sequence[str | None] | None = None) -> list[Sentiment]:
        """Score a batch of texts; the result has one entry per text, in order.

        `subjects`, when given, is the tracked keyword each text matched (one per text). An engine
        may use it so that the brand's own name does not count as an opinion about the brand.
        """
        ...
