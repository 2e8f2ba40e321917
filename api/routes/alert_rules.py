"""Alert rules CRUD, fired events and a test email. Validation lives in api.alerts.rules (shared with
the dashboard and the evaluator); the SQL in db.alerts; this module only maps them onto HTTP."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response, status
from fastapi.responses import JSONResponse

from api.alerts.rules import (
    AlertEventsPublic,
    AlertRuleCreate,
    AlertRuleError,
    AlertRulePublic,
    AlertRulesPublic,
    AlertRuleUpdate,
    RuleNotFound,
    check_recipients,
)
from api.deps import READ, WRITE, DatabaseDep, SettingsDep
from api.params import clean_term, keyword_filter
from api.routes.common import READ_RESPONSES, WRITE_RESPONSES, call_db
from api.schemas import Message, TestEmailRequest, TestEmailResult

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/alerts", tags=["alerts"])

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Rule id.")]
NOT_FOUND = {404: {"model": Message, "description": "No rule with that id."}}

RULE_EXAMPLES = {
    "negative_share": {
        "summary": "Negative share above 60% for United",
        "value": {
            "keyword": "United",
            "metric": "negative_share_above",
            "threshold": 0.6,
            "window_minutes": 5,
            "min_tweets": 20,
            "cooldown_minutes": 30,
            "recipients": ["ops@example.com"],
            "enabled": True,
            "notify_recovery": True,
        },
    },
    "score_drop": {
        "summary": "Average score drops 0.3 below the last hour, every keyword",
        "value": {
            "keyword": None,
            "metric": "score_drop",
            "threshold": 0.3,
            "window_minutes": 10,
            "baseline_minutes": 60,
        },
    },
    "volume_spike": {
        "summary": "Three times the usual volume",
        "value": {"keyword": "Tesla", "metric": "volume_spike", "threshold": 3.0},
    },
}


def _not_found(rule_id: int) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": f"alert rule {rule_id} not found"})


def _unprocessable(exc: Exception) -> JSONResponse:
    message = str(exc)
    return JSONResponse(
        status_code=422,
        content={
            "detail": message,
            "errors": [{"loc": ["body"], "msg": message, "type": "value_error"}],
        },
    )


def _check_rule(rule: AlertRuleCreate | AlertRuleUpdate, settings: Any) -> None:
    """Text fields the schema allows but storage cannot take; recipients against the allow-list."""
    if rule.keyword is not None:
        clean_term(rule.keyword, param="keyword")
    if rule.recipients:
        for address in rule.recipients:
            clean_term(address, param="recipients")
        check_recipients(rule.recipients, settings)


@router.get(
    "/rules",
    response_model=AlertRulesPublic,
    dependencies=[READ],
    responses=READ_RESPONSES,
    summary="List alert rules",
)
async def list_rules(db: DatabaseDep) -> AlertRulesPublic:
    from db import alerts

    rules = await call_db(alerts.list_rules, db)
    data = [AlertRulePublic.model_validate(r) for r in rules]
    return AlertRulesPublic(data=data, count=len(data))


@router.post(
    "/rules",
    response_model=AlertRulePublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WRITE],
    responses=WRITE_RESPONSES,
    summary="Create an alert rule",
)
async def create_rule(
    rule: Annotated[AlertRuleCreate, Body(openapi_examples=RULE_EXAMPLES)],
    db: DatabaseDep,
    settings: SettingsDep,
) -> Any:
    """201 with the stored rule and its id. Recipients must match ALERT_ALLOWED_RECIPIENTS."""
    from db import alerts

    try:
        _check_rule(rule, settings)
        stored = await call_db(alerts.create_rule, db, rule=rule)
    except AlertRuleError as exc:
        return _unprocessable(exc)
    return AlertRulePublic.model_validate(stored)


@router.get(
    "/rules/{rule_id}",
    response_model=AlertRulePublic,
    dependencies=[READ],
    responses={**READ_RESPONSES, **NOT_FOUND},
    summary="One alert rule",
)
async def get_rule(rule_id: RuleId, db: DatabaseDep) -> Any:
    from db import alerts

    try:
        stored = await call_db(alerts.get_rule, db, rule_id=rule_id)
    except RuleNotFound:
        return _not_found(rule_id)
    if stored is None:
        return _not_found(rule_id)
    return AlertRulePublic.model_validate(stored)


@router.put(
    "/rules/{rule_id}",
    response_model=AlertRulePublic,
    dependencies=[WRITE],
    responses={**WRITE_RESPONSES, **NOT_FOUND},
    summary="Update an alert rule",
)
async def update_rule(
    rule_id: RuleId,
    update: Annotated[
        AlertRuleUpdate,
        Body(
            openapi_examples={
                "disable": {"summary": "Disable a rule", "value": {"enabled": False}},
                "threshold": {"summary": "Change the threshold", "value": {"threshold": 0.7}},
            }
        ),
    ],
    db: DatabaseDep,
    settings: SettingsDep,
) -> Any:
    """Only the fields sent change (a full rule works too); the merged rule is validated whole."""
    from db import alerts

    try:
        _check_rule(update, settings)
        stored = await call_db(alerts.update_rule, db, rule_id=rule_id, update=update)
    except RuleNotFound:
        return _not_found(rule_id)
    except AlertRuleError as exc:
        return _unprocessable(exc)
    if stored is None:
        return _not_found(rule_id)
    return AlertRulePublic.model_validate(stored)


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[WRITE],
    responses={**WRITE_RESPONSES, **NOT_FOUND},
    summary="Delete an alert rule",
)
async def delete_rule(rule_id: RuleId, db: DatabaseDep) -> Response:
    from db import alerts

    try:
        found = await call_db(alerts.delete_rule, db, rule_id=rule_id)
    except RuleNotFound:
        return _not_found(rule_id)
    if found is False:
        return _not_found(rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/events",
    response_model=AlertEventsPublic,
    dependencies=[READ],
    responses=READ_RESPONSES,
    summary="Fired alert events, newest first",
)
async def list_events(
    db: DatabaseDep,
    keyword: Annotated[str | None, Query(description="Only this keyword's events.", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, 1..1000.")] = 100,
) -> AlertEventsPublic:
    from db import alerts

    events = await call_db(alerts.list_events, db, keyword=keyword_filter(keyword), limit=limit)
    return AlertEventsPublic.model_validate({"data": list(events), "count": len(events)})


@router.post(
    "/test-email",
    response_model=TestEmailResult,
    dependencies=[WRITE],
    responses={
        **WRITE_RESPONSES,
        409: {"model": Message, "description": "SMTP is not configured (SMTP_HOST unset)."},
        502: {"model": Message, "description": "The SMTP server refused or failed."},
    },
    summary="Send a test email with the SMTP settings",
)
async def test_email(settings: SettingsDep, body: TestEmailRequest | None = None) -> Any:
    from api.alerts.mailer import MailDisabled, MailError, send_test_email_async

    recipients = body.recipients if body else None
    try:
        for address in recipients or []:
            clean_term(address, param="recipients")
        sent = await send_test_email_async(settings, recipients)
    except AlertRuleError as exc:
        return _unprocessable(exc)
    except MailDisabled as exc:
        return JSONResponse(status_code=409, content={"detail": str(exc)})
    except MailError as exc:
        return JSONResponse(status_code=502, content={"detail": f"SMTP send failed: {exc}"})
    return TestEmailResult(
        sent=True,
        recipients=list(sent.recipients),
        detail=f"accepted by the SMTP server, Message-ID {sent.message_id}",
    )
