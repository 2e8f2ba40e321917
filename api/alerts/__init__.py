"""Alert engine: rules (schemas), detection, the evaluator loop, SMTP mailer and evaluator lease.

`from api.alerts import AlertEvaluator, run_in_background, send_test_email` — those are imported
lazily so that reading the rule schemas does not pull in the database layer.
"""

from __future__ import annotations

from typing import Any

from api.alerts.rules import (
    AlertEventPublic,
    AlertEventsPublic,
    AlertRuleCreate,
    AlertRuleError,
    AlertRulePublic,
    AlertRulesPublic,
    AlertRuleUpdate,
    RecipientNotAllowed,
    RuleNotFound,
    check_recipients,
)

__all__ = [
    "AlertEvaluator",
    "AlertEventPublic",
    "AlertEventsPublic",
    "AlertRuleCreate",
    "AlertRuleError",
    "AlertRulePublic",
    "AlertRuleUpdate",
    "AlertRulesPublic",
    "RecipientNotAllowed",
    "RuleNotFound",
    "check_recipients",
    "run_in_background",
    "send_test_email",
]

_LAZY = {
    "AlertEvaluator": "api.alerts.evaluator",
    "run_in_background": "api.alerts.evaluator",
    "send_test_email": "api.alerts.mailer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'api.alerts' has no attribute {name!r}")
