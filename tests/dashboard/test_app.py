"""The dashboard page under streamlit.testing.v1.AppTest, over a real database filled through
db.writes. AppTest does not fire run_every, so live updates are driven with at.run()."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from dashboard import state
from tests.dashboard.conftest import analyzed, burst, new_app
from tests.services import free_port


def charts(at) -> dict[str, dict]:
    """The page's Plotly figures by title (Streamlit wraps titles in <b>)."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        title = spec["layout"]["title"]["text"].replace("<b>", "").replace("</b>", "")
        out[title] = spec
    return out


def trend_names(at) -> list[str]:
    return [t["name"] for t in charts(at)["Sentiment trend"]["data"]]


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


FRAME_COLUMNS = {"counts_table": "tracked", "tweets_table": "text", "events_table": "fired"}


def frame(at, name: str):
    """A shown table as a DataFrame (AppTest keeps no keys on dataframes: find it by a column)."""
    column = FRAME_COLUMNS[name]
    for element in at.dataframe:
        value = element.value
        if column in value.columns:
            return value
    raise AssertionError(f"no table with a {column!r} column on the page")


def run(at):
    at.run()
    assert not at.exception, at.exception
    return at


def test_search_focuses_the_page_on_a_keyword(filled_any_db, app_env):
    app_env(filled_any_db.url)
    at = run(new_app())
    assert at.multiselect(key="kw_select").value == ["United", "Delta"]  # busiest first
    assert metric(at, "Tweets") == "43"
    assert set(trend_names(at)) == {"United", "Delta"}

    at.text_input(key="term").input("delta")  # any letter case finds the stored spelling
    run(at)
    assert at.multiselect(key="kw_select").value == ["Delta"]
    assert metric(at, "Tweets") == "12"
    figures = charts(at)
    assert trend_names(at) == ["Delta"]
    assert figures["Label distribution"]["data"][0]["values"] == [1, 3, 8]
    volume = {t["name"]: sum(t["y"]) for t in figures["Volume by label"]["data"]}
    assert volume == {"negative": 1, "neutral": 3, "positive": 8}
    counts = frame(at, "counts_table")
    assert counts.to_dict("records") == [
        {"keyword": "Delta", "tracked": True, "negative": 1, "neutral": 3, "positive": 8, "total": 12}]
    assert set(frame(at, "tweets_table")["keyword"]) == {"Delta"}


def test_keyword_query_parameter_preselects_keywords_on_first_load(filled_db, app_env):
    app_env(filled_db.url)
    at = new_app()
    at.query_params["keyword"] = "delta"  # the alert email's link; any letter case
    run(at)
    assert at.multiselect(key="kw_select").value == ["Delta"]
    assert metric(at, "Tweets") == "12"
    assert trend_names(at) == ["Delta"]

    at = new_app()
    at.query_params["keyword"] = ["Delta,united", "luggage"]  # repeatable and comma-separated
    run(at)
    assert at.multiselect(key="kw_select").value == ["Delta", "United"]
    assert at.text_input(key="term").value == "luggage"  # not tracked: it is searched instead
    counts = {r["keyword"]: r for r in frame(at, "counts_table").to_dict("records")}
    assert counts["luggage"]["tracked"] is False

    at.multiselect(key="kw_select").set_value(["United"])
    run(at)  # later runs belong to the user: the parameter does not override the widget again
    assert at.multiselect(key="kw_select").value == ["United"]


def test_searching_an_untracked_term_counts_it_and_offers_to_track_it(filled_db, app_env):
    app_env(filled_db.url)
    at = run(new_app())
    at.text_input(key="term").input("luggage")
    run(at)
    assert at.multiselect(key="kw_select").value == ["United", "Delta"]  # not a keyword: unchanged
    counts = {r["keyword"]: r for r in frame(at, "counts_table").to_dict("records")}
    assert counts["luggage"]["tracked"] is False
    assert (counts["luggage"]["total"], counts["luggage"]["negative"]) == (1, 1)
    shown = frame(at, "tweets_table")
    assert list(shown["text"]) == ["United lost my luggage again"]
    assert "text search" in texts(at.info)

    at.button(key="track").click()
    run(at)
    from db.queries import keywords

    assert any(k.keyword == "luggage" and k.tracked for k in keywords(filled_db.db))
    assert at.multiselect(key="kw_select").value == ["luggage"]
    assert "Now tracking" in texts(at.success)
    assert state.PRODUCER_HINT in texts(at.info)  # no tweets yet for it: say how to get some


def test_live_refresh_shows_new_tweets(filled_db, app_env):
    app_env(filled_db.url)
    at = run(new_app())
    before = charts(at)["Label distribution"]["data"][0]["values"]
    assert metric(at, "Tweets") == "43"
    end = datetime.now(UTC) - timedelta(seconds=5)
    filled_db.write(burst("United", ["positive"] * 7, end=end, minutes=1, prefix="new-"))
    time.sleep(2.2)  # the query cache lives ~2 s: a refresh after it reads the new rows
    run(at)
    assert metric(at, "Tweets") == "50"
    after = charts(at)["Label distribution"]["data"][0]["values"]
    assert after == [before[0], before[1], before[2] + 7]


def test_replayed_export_offers_the_window_ending_at_the_latest_tweet(empty_db, app_env):
    old = datetime(2015, 2, 24, 19, 0, tzinfo=UTC)
    empty_db.write(burst("United", ["negative"] * 5 + ["positive"] * 2, end=old, minutes=30))
    app_env(empty_db.url)
    at = run(new_app())
    assert metric(at, "Tweets") == "0"
    assert "older ones are stored" in texts(at.info)
    at.button(key="anchor_btn").click()
    run(at)
    assert metric(at, "Tweets") == "7"
    assert charts(at)["Label distribution"]["data"][0]["values"] == [5, 0, 2]
    at.button(key="unanchor").click()
    run(at)
    assert metric(at, "Tweets") == "0"


def test_empty_database_says_how_to_get_tweets(make_settings, sqlite_url, app_env):
    from db.database import open_database

    open_database(make_settings(database_url=sqlite_url, keywords=[])).close()
    app_env(sqlite_url, KEYWORDS="")
    at = run(new_app())
    shown = texts(at.info)
    assert "No tweets stored yet" in shown and state.PRODUCER_HINT in shown and state.RUN_HINT in shown
    assert len(at.get("plotly_chart")) == 4  # the charts are there, empty, saying so
    assert "No tweets in this window" in json.dumps(charts(at)["Sentiment trend"]["layout"])


def test_unreachable_database_shows_a_plain_error(app_env):
    app_env(f"postgresql+psycopg2://streampulse:hunter2@127.0.0.1:{free_port()}/streampulse")
    at = run(new_app())
    assert len(at.error) == 1
    message = at.error[0].value
    assert "DATABASE_URL" in message and "127.0.0.1" in message
    assert "hunter2" not in message  # the password is masked
    assert not at.get("plotly_chart") and not at.metric


def _fill_rule_form(at, rid: str, **values) -> None:
    widgets = {"keyword": at.selectbox, "metric": at.selectbox, "threshold": at.number_input,
               "window": at.number_input, "baseline": at.number_input, "min": at.number_input,
               "cooldown": at.number_input, "recipients": at.text_input, "enabled": at.checkbox,
               "recovery": at.checkbox}
    for name, value in values.items():
        widgets[name](key=f"rf_{rid}_{name}").set_value(value)


def _button(at, label: str):
    return next(b for b in at.button if b.label == label)


def test_rule_editor_creates_edits_disables_and_deletes(filled_db, app_env):
    from db.alerts import list_rules

    app_env(filled_db.url)
    at = run(new_app())
    assert "No alert rules yet" in texts(at.caption)
    _fill_rule_form(at, "new", keyword="United", metric="avg_score_below", threshold=-0.4, window=10,
                    recipients="Alice@Example.com, bob@example.com", recovery=True)
    _button(at, "Create rule").click()
    run(at)
    rules = list_rules(filled_db.db)
    assert len(rules) == 1
    rule = rules[0]
    assert (rule.keyword, rule.metric, rule.threshold, rule.window_minutes) == ("United", "avg_score_below",
                                                                                -0.4, 10)
    assert rule.recipients == ["alice@example.com", "bob@example.com"] and rule.notify_recovery
    assert f"Created rule #{rule.id}" in texts(at.success)
    shapes = charts(at)["Sentiment trend"]["layout"]["shapes"]
    assert [s["y0"] for s in shapes] == [-0.4]  # the threshold is drawn on the trend

    rid = str(rule.id)
    assert at.selectbox(key="rule_pick").value == rid  # the saved rule is now selected for editing
    _fill_rule_form(at, rid, threshold=-0.6, min=5)
    _button(at, f"Save rule #{rid}").click()
    run(at)
    rule = list_rules(filled_db.db)[0]
    assert (rule.threshold, rule.min_tweets, rule.window_minutes) == (-0.6, 5, 10)

    at.button(key=f"toggle_{rid}").click()
    run(at)
    assert list_rules(filled_db.db)[0].enabled is False
    assert not charts(at)["Sentiment trend"]["layout"].get("shapes")  # a disabled rule is not drawn

    assert at.button(key=f"delete_{rid}").disabled  # deleting needs the confirmation first
    at.checkbox(key=f"confirm_delete_{rid}").check()
    run(at)
    at.button(key=f"delete_{rid}").click()
    run(at)
    assert list_rules(filled_db.db) == []
    assert f"Deleted rule #{rid}" in texts(at.success)


@pytest.mark.parametrize(("values", "message"), [
    ({"metric": "avg_score_below", "threshold": 1.5}, "threshold for avg_score_below must be in [-1, 1]"),
    ({"metric": "volume_spike", "threshold": 0.5}, "threshold for volume_spike must be greater than 1"),
    ({"window": 0}, "window_minutes"),
    ({"recipients": "mallory@evil.test"}, "recipients not allowed: mallory@evil.test"),
])
def test_invalid_rule_shows_an_error_and_writes_nothing(filled_db, app_env, values, message):
    from db.alerts import list_rules

    app_env(filled_db.url)
    at = run(new_app())
    _fill_rule_form(at, "new", **values)
    _button(at, "Create rule").click()
    run(at)
    assert any(message in e.value and e.value.startswith("Rule not saved") for e in at.error), texts(at.error)
    assert list_rules(filled_db.db) == []


def test_latest_alert_events_are_listed(filled_db, app_env):
    from api.alerts.detection import RuleState
    from api.alerts.rules import AlertRuleCreate
    from db.alerts import apply_transition, create_rule

    rule = create_rule(filled_db.db, rule=AlertRuleCreate(keyword="United", metric="avg_score_below",
                                                          threshold=-0.3))
    fired = datetime.now(UTC) - timedelta(minutes=1)
    applied, _event = apply_transition(
        filled_db.db, rule_id=rule.id, keyword="United", expected=None,
        new=RuleState(armed=False, holding=True, last_fired_at=fired),
        event={"kind": "alert", "fired_at": fired, "metric": "avg_score_below", "threshold": -0.3,
               "value": -0.42, "baseline_value": None, "n": 31, "n_neg": 21, "n_neu": 6, "n_pos": 4,
               "window_minutes": 5, "email_status": "failed", "email_error": "connection refused",
               "recipients": ["ops@example.com"]},
    )
    assert applied
    app_env(filled_db.url)
    at = run(new_app())
    events = frame(at, "events_table").to_dict("records")
    assert len(events) == 1
    e = events[0]
    assert (e["keyword"], e["value"], e["threshold"], e["tweets"], e["neg"], e["email"], e["error"]) == (
        "United", -0.42, -0.3, 31, 21, "failed", "connection refused")


def test_send_test_email_over_real_smtp(filled_db, app_env, smtp_server):
    s = smtp_server.settings()
    app_env(filled_db.url, SMTP_HOST=s["smtp_host"], SMTP_PORT=str(s["smtp_port"]), SMTP_STARTTLS="false",
            ALERT_EMAIL_FROM="streampulse@example.com")
    at = run(new_app())
    at.button(key="test_email").click()
    run(at)
    assert "Test email sent to ops@example.com" in texts(at.success), texts(at.error)
    received = smtp_server.sink.wait_for(1)
    assert received[0].rcpt_tos == ["ops@example.com"]
    assert "Test email" in received[0].message["Subject"]


def test_send_test_email_without_smtp_says_what_to_set(filled_db, app_env):
    app_env(filled_db.url, SMTP_HOST="")
    at = run(new_app())
    at.button(key="test_email").click()
    run(at)
    assert "SMTP_HOST" in texts(at.warning)


def test_password_gate(filled_db, app_env):
    app_env(filled_db.url, DASHBOARD_PASSWORD="correct horse")
    at = run(new_app())
    assert not at.get("plotly_chart") and not at.metric and not at.multiselect  # nothing shows
    at.text_input(key="_sp_password").input("wrong")
    _button(at, "Sign in").click()
    run(at)
    assert "Wrong password" in texts(at.error)
    assert not at.get("plotly_chart") and not at.metric
    at.text_input(key="_sp_password").input("correct horse")
    _button(at, "Sign in").click()
    run(at)
    assert len(at.get("plotly_chart")) == 4 and metric(at, "Tweets") == "43"


def test_status_line_from_heartbeats(filled_db, app_env):
    from db.writes import beat

    beat(filled_db.db, stage="processor", instance="p-1", engine="vader", rate=12.5, lag=7)
    beat(filled_db.db, stage="ingestor", instance="i-1", rate=12.0, lag=0)
    until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    beat(filled_db.db, stage="producer-x", instance="x-1", rate=0.0,
         details={"rate_limited_until": until})
    app_env(filled_db.url)
    at = run(new_app())
    status = texts(at.caption)
    assert "engine vader" in status and "DB sqlite" in status and "ingest 12.0 tweets/s" in status
    assert "lag 7 msgs" in status
    assert "X rate limit" in texts(at.warning)


def test_a_keyword_with_no_tweets_says_so(filled_db, app_env):
    app_env(filled_db.url)
    at = run(new_app())
    from db.writes import add_keyword

    add_keyword(filled_db.db, "JetBlue")
    time.sleep(2.2)
    at.multiselect(key="kw_select").set_value(["JetBlue"])
    run(at)
    assert "No tweets yet for JetBlue" in texts(at.info)


def test_other_keyword_written_while_open_is_searchable(filled_db, app_env):
    """A keyword that appears in the data after the page opened can be searched on the next run."""
    app_env(filled_db.url)
    at = run(new_app())
    filled_db.write([analyzed(id="aa-1", keyword="Alaska", text="Alaska was great",
                              created_at=datetime.now(UTC) - timedelta(minutes=1), label="positive")])
    time.sleep(2.2)
    run(at)
    at.text_input(key="term").input("alaska")
    run(at)
    assert at.multiselect(key="kw_select").value == ["Alaska"]
    assert metric(at, "Tweets") == "1"


def test_label_filter_narrows_the_tweets_table(filled_db, app_env):
    app_env(filled_db.url)
    at = run(new_app())
    assert set(frame(at, "tweets_table")["label"]) == {"negative", "neutral", "positive"}
    assert at.download_button(key="csv_download").label == "Download CSV"
    at.segmented_control(key="label_filter").set_value("negative")
    run(at)
    shown = frame(at, "tweets_table")
    assert len(shown) == 22 and set(shown["label"]) == {"negative"}  # 21 United + 1 Delta


def test_custom_range(empty_db, app_env):
    old = datetime(2015, 2, 24, 19, 0, tzinfo=UTC)
    empty_db.write(burst("United", ["negative"] * 4 + ["neutral"], end=old, minutes=30))
    app_env(empty_db.url)
    at = run(new_app())
    at.selectbox(key="range").set_value("Custom")
    run(at)
    at.date_input(key="custom_from_d").set_value(old.date())
    at.time_input(key="custom_from_t").set_value(datetime(2015, 2, 24, 18, 0).time())
    at.date_input(key="custom_to_d").set_value(old.date())
    at.time_input(key="custom_to_t").set_value(datetime(2015, 2, 24, 20, 0).time())
    run(at)
    assert metric(at, "Tweets") == "5"
    assert "custom range" in texts(at.caption)
    at.time_input(key="custom_to_t").set_value(datetime(2015, 2, 24, 17, 0).time())
    run(at)
    assert "must end after it starts" in texts(at.sidebar.error)


def test_database_going_down_mid_session_shows_an_error_then_recovers(make_settings, throwaway_pg, app_env):
    from db.database import open_database
    from tests.dashboard.conftest import DashDB, fill

    d = DashDB(url=throwaway_pg.url, db=None, settings=None)
    d.db = open_database(make_settings(database_url=throwaway_pg.url, keywords=["United", "Delta"]))
    fill(d)
    d.db.close()
    app_env(throwaway_pg.url)
    at = run(new_app())
    assert metric(at, "Tweets") == "43"

    throwaway_pg.down()
    time.sleep(2.2)  # past the query cache
    run(at)
    assert at.error and all("DATABASE_URL" in e.value for e in at.error)

    throwaway_pg.up()
    time.sleep(2.2)
    run(at)
    assert not at.error
    assert metric(at, "Tweets") == "43"


def test_invalid_settings_are_named_not_traced(filled_db, app_env):
    app_env(filled_db.url, DASHBOARD_REFRESH_SECONDS="-5")
    at = run(new_app())
    assert len(at.error) == 1 and "DASHBOARD_REFRESH_SECONDS" in at.error[0].value
    assert not at.get("plotly_chart")


def _create_rule(d, keyword: str = "United"):
    from api.alerts.rules import AlertRuleCreate
    from db.alerts import create_rule

    return create_rule(d.db, rule=AlertRuleCreate(keyword=keyword, metric="avg_score_below", threshold=-0.3))


def test_api_key_without_password_makes_the_dashboard_read_only(filled_db, app_env):
    """The page writes to the database directly, past the API key: with API_KEY set and no
    DASHBOARD_PASSWORD, anyone reaching it must not change tracking or alert rules."""
    from dashboard.auth import READ_ONLY_NOTE
    from db.alerts import list_rules
    from db.queries import keywords

    rule = _create_rule(filled_db)
    app_env(filled_db.url, API_KEY="s3cret-key")
    at = run(new_app())
    assert frame(at, "counts_table") is not None and len(at.get("plotly_chart")) == 4  # reading works
    assert READ_ONLY_NOTE in texts(at.info)
    labels = {b.label for b in at.button}
    assert "Create rule" not in labels and f"Save rule #{rule.id}" not in labels
    keys = {b.key for b in at.button}
    assert not keys & {"test_email", f"toggle_{rule.id}", f"delete_{rule.id}"}, keys

    at.text_input(key="term").input("luggage")
    run(at)
    track = at.button(key="track")
    assert track.disabled and READ_ONLY_NOTE in texts(at.sidebar.caption)
    # A browser cannot click it; a forged widget message (simulated by lifting the flag) still
    # writes nothing.
    track.proto.disabled = False
    track.click()
    run(at)
    assert not any(k.keyword == "luggage" and k.tracked for k in keywords(filled_db.db))
    assert "Now tracking" not in texts(at.success)
    assert [(r.id, r.enabled) for r in list_rules(filled_db.db)] == [(rule.id, True)]


def test_api_key_with_password_lets_the_signed_in_user_edit(filled_db, app_env):
    from db.queries import keywords

    rule = _create_rule(filled_db)
    app_env(filled_db.url, API_KEY="s3cret-key", DASHBOARD_PASSWORD="correct horse")
    at = run(new_app())
    at.text_input(key="_sp_password").input("correct horse")
    _button(at, "Sign in").click()
    run(at)
    assert "Editing is off" not in texts(at.info)
    assert {"Create rule", "Send test email"} <= {b.label for b in at.button}
    at.selectbox(key="rule_pick").set_value(str(rule.id))
    run(at)
    assert at.button(key=f"toggle_{rule.id}") is not None
    at.text_input(key="term").input("luggage")
    run(at)
    assert not at.button(key="track").disabled
    at.button(key="track").click()
    run(at)
    assert any(k.keyword == "luggage" and k.tracked for k in keywords(filled_db.db))


@pytest.mark.parametrize(("term", "reason"), [
    ("y" * 300, "longer than 200 characters"),
    ("Uni\u200bted", "U+200B"),
    ("bad\x07term", "U+0007"),
], ids=["too-long", "zero-width", "control"])
def test_an_invalid_term_is_refused_and_nothing_is_tracked(filled_db, app_env, term, reason):
    from db.queries import keywords

    app_env(filled_db.url)
    at = run(new_app())
    before = [(k.keyword, k.tracked) for k in keywords(filled_db.db)]
    at.text_input(key="term").input(term)
    run(at)
    assert any(reason in e.value for e in at.sidebar.error), texts(at.sidebar.error)
    assert not [b for b in at.button if b.key == "track"]  # not offered for tracking
    assert "Now tracking" not in texts(at.success)
    assert [(k.keyword, k.tracked) for k in keywords(filled_db.db)] == before
    assert metric(at, "Tweets") == "43"  # the page shows the keywords chosen, not a bogus search


def test_tweets_table_shows_each_tweets_source(filled_db, app_env):
    """Mock tweets and replayed real ones in one database are told apart by the source column."""
    filled_db.write([analyzed(id="mock-1", keyword="United", text="United mock tweet", label="neutral",
                              created_at=datetime.now(UTC) - timedelta(seconds=10), source="mock")])
    app_env(filled_db.url)
    at = run(new_app())
    shown = frame(at, "tweets_table")
    assert "source" in shown.columns
    by_id = dict(zip(shown["id"], shown["source"], strict=True))
    assert by_id["mock-1"] == "mock" and by_id["lug-1"] == "replay"
    table = next(d for d in at.dataframe if "text" in d.value.columns)
    shown_columns = list(table.proto.column_order)
    # Visible without scrolling sideways: before the wide text column (the CSV is checked in
    # test_state and in the Chromium test).
    assert shown_columns.index("source") < shown_columns.index("text"), shown_columns


def test_a_cleanly_stopped_stage_is_named_not_warned_about(filled_db, app_env):
    import sqlalchemy as sa

    from db import schema
    from db.writes import beat

    beat(filled_db.db, stage="ingestor", instance="ingestor@vm:4766", rate=0.0, lag=0,
         details={"state": "stopped", "total": 43})
    beat(filled_db.db, stage="processor", instance="processor@vm:4000", engine="vader", rate=1.0, lag=0)
    H = schema.stage_heartbeats
    with filled_db.db.engine.begin() as conn:  # both last beat two minutes ago
        conn.execute(sa.update(H).values(last_seen=datetime.now(UTC) - timedelta(minutes=2)))
    app_env(filled_db.url)
    at = run(new_app())
    assert "stopped: ingestor" in texts(at.caption)
    assert [w.value for w in at.warning] == [
        "The processor stage (processor@vm:4000) last reported 2 min ago."]
