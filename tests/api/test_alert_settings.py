"""The API with ALERTS_ENABLED and an invalid ALERT_EMAIL_TO: one clear error line, reads still served."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import api_settings


def test_bad_alert_email_to_logs_an_error_and_the_api_keeps_serving(sqlite_url, caplog):
    caplog.set_level(logging.ERROR, logger="api.main")
    settings = api_settings(sqlite_url, alerts_enabled=True, alert_email_to=["not-an-address"])
    with TestClient(create_app(settings)) as client:
        assert client.get("/keywords").status_code == 200
        assert client.app.state.sp.evaluator is None
    errors = [r.getMessage() for r in caplog.records if r.name == "api.main" and r.levelno == logging.ERROR]
    assert any("alert evaluator NOT started" in m and "ALERT_EMAIL_TO" in m for m in errors), errors
