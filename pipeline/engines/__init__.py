"""Sentiment engines: `make_engine(settings)` picks one by SENTIMENT_ENGINE."""

from __future__ import annotations

import logging

from pipeline.engines.base import Sentiment, SentimentEngine
from pipeline.errors import EngineUnavailable
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["Sentiment", "SentimentEngine", "make_engine"]


def make_engine(settings: Settings) -> SentimentEngine:
    """The engine SENTIMENT_ENGINE names; `auto` falls back to VADER when the model cannot load."""
    choice = settings.sentiment_engine
    if choice == "vader":
        from pipeline.engines.vader import VaderEngine

        return VaderEngine()
    try:
        from pipeline.engines.transformer import TransformerEngine

        return TransformerEngine.from_settings(settings)
    except EngineUnavailable as exc:
        if choice == "transformer":
            raise
        logger.warning(
            "!!! SENTIMENT_ENGINE=auto: falling back to VADER, because the transformer model could "
            "not be loaded: %s. Rows scored now are stored with engine='vader'.",
            exc,
        )
        from pipeline.engines.vader import VaderEngine

        return VaderEngine()
