"""The optional DASHBOARD_PASSWORD gate: when it is set, nothing else renders until it is given."""

from __future__ import annotations

import hmac
import logging

import streamlit as st

from pipeline.settings import Settings

log = logging.getLogger(__name__)

SESSION_KEY = "_sp_authenticated"
READ_ONLY_NOTE = ("Editing is off: API_KEY is set, so set DASHBOARD_PASSWORD to edit from the dashboard "
                  "(or use the API with the key)")


def _secret(value) -> str:
    return value.get_secret_value() if value else ""


def can_edit(settings: Settings) -> bool:
    """May this page write (track keywords, change alert rules, send a test email)? The dashboard
    writes to the database directly, past the API's key check, so with API_KEY set it may only
    write behind DASHBOARD_PASSWORD (which `require_password` has already made the visitor give);
    with neither set, writes are as open as the API's."""
    return not _secret(settings.api_key) or bool(_secret(settings.dashboard_password))


def password_matches(given: str, secret: str) -> bool:
    """Constant-time comparison, so response timing says nothing about how much of a guess was right."""
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def require_password(settings: Settings) -> None:
    """Return when the visitor may see the dashboard; otherwise draw the login form and stop the run."""
    secret = _secret(settings.dashboard_password)
    if not secret or st.session_state.get(SESSION_KEY):
        return
    st.title("StreamPulse")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="_sp_password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if password_matches(given or "", secret):
            st.session_state[SESSION_KEY] = True
            # The typed password must not linger in the session state.
            st.session_state.pop("_sp_password", None)
            st.rerun()
        log.warning("dashboard: wrong password given")
        st.error("Wrong password.")
    else:
        st.caption("This dashboard is protected by DASHBOARD_PASSWORD.")
    st.stop()
