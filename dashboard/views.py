"""The dashboard's Streamlit UI: sidebar controls, the live fragment (status, KPIs, charts, counts,
tweets) and the alert editor. Logic lives in state.py / loader.py / charts.py; this file draws."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import available_timezones

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from dashboard import cache as dcache
from dashboard import state
from dashboard.auth import READ_ONLY_NOTE, can_edit, require_password
from dashboard.loader import ViewData, ViewParams, load_view
from pipeline.errors import StreamPulseError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

LABEL_FILTERS = ("all", "negative", "neutral", "positive")
#: Our own static script (no user input in it): keeps chart zoom across live refreshes.
ZOOM_KEEPER = Path(__file__).with_name("zoom_keeper.html")


@dataclass(frozen=True)
class Controls:
    keywords: tuple[str, ...]
    term: str
    range_label: str
    custom: tuple[datetime, datetime] | None
    refresh: float
    paused: bool
    zone: str


# --- entry -----------------------------------------------------------------------------------------

def main() -> None:
    settings = load_settings()
    require_password(settings)
    db = connect(settings)
    reader = dcache.CachedReader(db, settings.database_url)
    with db_errors(settings, stop=True):
        controls = sidebar(settings, db, reader)
    st.title("StreamPulse")
    live_section(controls, db, reader, settings)
    with db_errors(settings):
        alerts_section(db, settings, reader)
    st.html(ZOOM_KEEPER, unsafe_allow_javascript=True)


def load_settings() -> Settings:
    try:
        return dcache.settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        st.error(f"StreamPulse settings are invalid ({problems}). Fix the environment or `.env`.")
        st.stop()


def connect(settings: Settings):
    """The cached Database, or a plain error naming DATABASE_URL (no traceback) and a stopped run."""
    try:
        return dcache.open_db(settings.database_url, settings)
    except Exception as exc:  # noqa: BLE001 - any failure to open is shown the same plain way
        log.warning("dashboard: cannot open the database: %s", _first_line(exc))
        st.error(
            f"Cannot reach the database at `{_safe_url(settings.database_url)}`. "
            f"Check the DATABASE_URL setting and that the database is running.\n\n"
            f"Details: {_first_line(exc)}"
        )
        st.stop()


@contextmanager
def db_errors(settings: Settings, *, stop: bool = False) -> Iterator[None]:
    """A query that fails mid-session (DB restarted, network gone) shows st.error, not a traceback;
    with `stop`, the rest of the page (which needs what failed) is not drawn."""
    import sqlalchemy as sa

    try:
        yield
    except (sa.exc.SQLAlchemyError, StreamPulseError) as exc:
        log.warning("dashboard: database error: %s", _first_line(exc))
        st.error(
            f"The database at `{_safe_url(settings.database_url)}` did not answer; the page retries on "
            f"its next refresh. Check DATABASE_URL and the database.\n\nDetails: {_first_line(exc)}"
        )
        if stop:
            st.stop()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as a placeholder, never raw
        return "<unparsable URL>"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --- sidebar ---------------------------------------------------------------------------------------

@cache
def _zones() -> list[str]:
    return sorted(available_timezones())


def _on_search(known: list[str]) -> None:
    """Typing a known keyword focuses the page on it (the selection becomes that keyword)."""
    term = state.clean_term(st.session_state.get("term"))
    match = state.match_keyword(term, known)
    if match:
        st.session_state["kw_select"] = [match]


def _track(db, term: str, settings: Settings) -> None:
    from db import writes

    # Checked again here, not only by hiding the button: the write must never run read-only.
    if not can_edit(settings) or state.term_problem(term):
        return
    writes.add_keyword(db, term)
    dcache.clear_queries()
    st.session_state["kw_select"] = [term]
    st.session_state["_sp_flash"] = (
        f"Now tracking “{term}”. Producers pick it up on their next round; "
        f"for a quick look run `{state.PRODUCER_HINT}`."
    )


def _apply_query_params(known: list[str]) -> None:
    """On a session's first run, `?keyword=Tesla` (the alert email's link; repeatable or
    comma-separated) preselects those tracked keywords; an unknown term goes to the search box.
    Only once: afterwards the widgets are the user's."""
    if st.session_state.get("_sp_query_applied"):
        return
    st.session_state["_sp_query_applied"] = True
    values = st.query_params.get_all("keyword")
    if not values:
        return
    matched, others = state.keywords_from_query(values, known)
    if matched:
        st.session_state["kw_select"] = matched
    if others and not st.session_state.get("term"):
        st.session_state["term"] = others[0]  # the search box holds one term


def sidebar(settings: Settings, db, reader) -> Controls:
    sb = st.sidebar
    sb.header("StreamPulse")
    known_infos = reader.keywords()
    known = [k.keyword for k in known_infos]
    _apply_query_params(known)

    sb.text_input("Search a keyword", key="term", on_change=_on_search, args=(known,),
                  placeholder="any term, e.g. United", help="A tracked keyword focuses the charts on it; "
                  "any other term searches the stored tweets' text.")
    term = state.clean_term(st.session_state.get("term"))
    problem = state.term_problem(term) if term else None
    if problem:
        # Neither searched nor offered for tracking: the API would refuse it too (422).
        sb.error(f"{problem} Nothing was searched or tracked.")
        term = ""
    match = state.match_keyword(term, known)
    tracked = {k.keyword for k in known_infos if k.tracked}
    editable = can_edit(settings)
    if term and (match is None or match not in tracked):
        sb.button(f"Track “{term}”", on_click=_track if editable else None,
                  args=(db, match or term, settings), key="track", disabled=not editable,
                  help="Add it to the tracked keywords (stored; producers start collecting it)."
                  if editable else READ_ONLY_NOTE)
        if not editable:
            sb.caption(READ_ONLY_NOTE + ".")
    flash = st.session_state.pop("_sp_flash", None)
    if flash:
        sb.success(flash)

    if "kw_select" not in st.session_state:
        st.session_state["kw_select"] = state.default_selection(known_infos)
    options = list(dict.fromkeys([*known, *st.session_state["kw_select"]]))
    sb.multiselect("Keywords", options, key="kw_select", placeholder="choose keywords")

    range_label = sb.selectbox("Time range", list(state.RANGES), index=list(state.RANGES).index(
        state.DEFAULT_RANGE), key="range")
    zone_default = state.resolve_timezone(setting=settings.dashboard_tz, browser=_browser_tz())
    zones = _zones()
    zone = sb.selectbox("Time zone", zones, index=zones.index(zone_default) if zone_default in zones else 0,
                        key="zone")
    custom = _custom_range(sb, zone) if range_label == "Custom" else None

    configured = float(settings.dashboard_refresh_seconds)
    choices = sorted({*state.REFRESH_CHOICES, configured})
    refresh = sb.selectbox("Refresh every", choices, index=choices.index(configured),
                           key="refresh", format_func=lambda s: f"{s:g} s",
                           help="How often the live part of the page reloads its data.")
    paused = sb.toggle("Pause live updates", key="paused",
                       help="Stops the automatic refresh, e.g. to read the tables at leisure.")
    return Controls(keywords=tuple(st.session_state["kw_select"]), term=term, range_label=range_label,
                    custom=custom, refresh=float(refresh), paused=bool(paused), zone=zone)


def _browser_tz() -> str | None:
    try:
        return st.context.timezone
    except Exception:  # noqa: BLE001 - no browser context (tests, bare mode)
        return None


def _custom_range(sb, zone: str) -> tuple[datetime, datetime] | None:
    tz = state.zone_or_none(zone) or UTC
    now = datetime.now(tz)
    start_default = now - timedelta(days=1)
    c1, c2 = sb.columns(2)
    # Replayed exports can be years old: allow dates well before date_input's default 10-year floor.
    bounds = dict(min_value=date(2006, 1, 1), max_value=now.date() + timedelta(days=1))
    start_d = c1.date_input("From", value=start_default.date(), key="custom_from_d", **bounds)
    start_t = c2.time_input("at", value=time(start_default.hour, start_default.minute), key="custom_from_t")
    c3, c4 = sb.columns(2)
    end_d = c3.date_input("To", value=now.date(), key="custom_to_d", **bounds)
    end_t = c4.time_input("at ", value=time(now.hour, now.minute), key="custom_to_t")
    since = datetime.combine(start_d, start_t, tzinfo=tz)
    until = datetime.combine(end_d, end_t, tzinfo=tz)
    if until <= since:
        sb.error("The custom range must end after it starts.")
        return None
    return since, until


# --- live section ------------------------------------------------------------------------------------

def live_section(controls: Controls, db, reader, settings: Settings) -> None:
    run_every = None if controls.paused else controls.refresh

    @st.fragment(run_every=run_every)
    def live() -> None:
        with db_errors(settings):
            render_live(controls, db, reader, settings)

    live()


def render_live(controls: Controls, db, reader, settings: Settings) -> None:
    if controls.range_label == "Custom" and controls.custom is None:
        st.info("Choose a custom range in the sidebar.")
        return
    label = st.session_state.get("label_filter", "all")
    params = ViewParams(
        keywords=controls.keywords, range_label=controls.range_label, term=controls.term,
        custom=controls.custom, anchor=bool(st.session_state.get("anchor")),
        label=None if label == "all" else label, zone=controls.zone,
    )
    now = datetime.now(UTC)
    data = load_view(reader, params, now=now)

    _status(data, db, settings, now)
    _window_banner(data, controls)
    _kpis(data)
    _charts(data)
    left, right = st.columns([2, 3])
    with left:
        _counts(data)
    with right:
        _tweets(data)


def _status(data: ViewData, db, settings: Settings, now: datetime) -> None:
    line = state.status_line(
        heartbeats=data.heartbeats, mode=db.mode, latest=data.latest, now=now, zone=data.params.zone,
        stale_after=timedelta(seconds=max(3 * settings.heartbeat_interval_seconds, 30)),
        stored_engines=[t.engine for t in data.tweets],
    )
    st.caption("Status: " + line.text, help="From the pipeline stages' heartbeats.")
    for warning in line.warnings:
        st.warning(warning)


def _window_banner(data: ViewData, controls: Controls) -> None:
    w, zone = data.window, data.params.zone
    span = f"{state.fmt_time(w.since, zone)} → {state.fmt_time(w.until, zone)}"
    what = ", ".join(data.params.keywords) or "all keywords"
    if w.anchored:
        c1, c2 = st.columns([4, 1])
        c1.info(f"Showing the {controls.range_label} up to the latest stored tweet ({span}) for {what}.")
        c2.button("Back to now", key="unanchor", on_click=_set_anchor, args=(False,))
    else:
        st.caption(f"Window: {w.label} ({span}) for {what}.")
    if data.params.term and data.term_keyword is None:
        st.info(f"“{data.params.term}” is not a tracked keyword: its counts and tweets below come from a "
                f"text search of the stored tweets. Track it (sidebar) to chart it.")
    if data.offer_anchor:
        c1, c2 = st.columns([4, 1])
        c1.info(f"No tweets in the {w.label}, but older ones are stored (the latest at "
                f"{state.fmt_time(data.latest, zone)}, e.g. a replayed export).")
        c2.button(f"Show the {controls.range_label} up to it", key="anchor_btn", on_click=_set_anchor,
                  args=(True,), type="primary")
    elif data.summary.n == 0:
        if data.latest is None and not data.known:
            st.info(f"No tweets stored yet. Start the mock producer with `{state.PRODUCER_HINT}`, "
                    f"or run the whole pipeline with `{state.RUN_HINT}`.")
        elif data.latest is None:
            st.info(f"No tweets yet for {what}. Start a producer, e.g. `{state.PRODUCER_HINT}` "
                    f"(or `{state.RUN_HINT}`).")
        else:
            st.info(f"No tweets for {what} in this window; the latest is from "
                    f"{state.fmt_time(data.latest, zone)}.")


def _set_anchor(value: bool) -> None:
    st.session_state["anchor"] = value


def _kpis(data: ViewData) -> None:
    s = data.summary
    cols = st.columns(6)
    cols[0].metric("Tweets", f"{s.n:,}", delta=None if s.change_n is None else f"{s.change_n:+,}",
                   help="Tweets in the window; the change is against the previous window of equal length.")
    cols[1].metric("Avg score", state.fmt_score(s.avg_score), delta=state.fmt_delta(s.change_avg_score),
                   help="Count-weighted average score in [-1, 1], change against the previous window.")
    cols[2].metric("Negative", state.fmt_share(s.share_neg), help=f"{s.n_neg:,} tweets")
    cols[3].metric("Neutral", state.fmt_share(s.share_neu), help=f"{s.n_neu:,} tweets")
    cols[4].metric("Positive", state.fmt_share(s.share_pos), help=f"{s.n_pos:,} tweets")
    cols[5].metric("Tweets / min", "–" if s.tweets_per_minute is None else f"{s.tweets_per_minute:.1f}")


def _charts(data: ViewData) -> None:
    config = {"displaylogo": False}
    top = st.columns(2)
    top[0].plotly_chart(data.figures["trend"], key="chart_trend", config=config)
    top[1].plotly_chart(data.figures["volume"], key="chart_volume", config=config)
    bottom = st.columns([2, 3])
    bottom[0].plotly_chart(data.figures["labels"], key="chart_labels", config=config)
    bottom[1].plotly_chart(data.figures["comparison"], key="chart_comparison", config=config)


def _counts(data: ViewData) -> None:
    st.subheader("Keyword counts")
    if not data.counts:
        st.caption("Choose keywords or search a term.")
        return
    frame = pd.DataFrame([
        {"keyword": c.term, "tracked": c.tracked, "negative": c.n_neg, "neutral": c.n_neu,
         "positive": c.n_pos, "total": c.n}
        for c in data.counts
    ])
    st.dataframe(frame, hide_index=True, key="counts_table")


def _tweets(data: ViewData) -> None:
    st.subheader("Latest tweets")
    st.segmented_control("Label", LABEL_FILTERS, key="label_filter", default="all",
                         label_visibility="collapsed")
    records = state.tweet_records(data.tweets, data.params.zone)
    if not records:
        st.caption("No tweets to show for this selection.")
        return
    frame = pd.DataFrame(records, columns=list(state.TWEET_COLUMNS))
    styled = frame.style.apply(
        lambda row: [f"background-color: {state.LABEL_BACKGROUNDS.get(row['label'], '')}"] * len(row),
        axis=1,
    ).format({"score": "{:+.3f}"})
    st.dataframe(styled, hide_index=True, key="tweets_table", column_order=state.TWEET_TABLE_COLUMNS,
                 column_config={
        "label": st.column_config.TextColumn("label", width="small"),
        "score": st.column_config.NumberColumn("score", width="small"),
        "text": st.column_config.TextColumn("text", width="large"),
        "source": st.column_config.TextColumn("source", width="small",
                                              help="mock, replay (a file export) or x (the X API)"),
        "engine": None,
        "id": None,
    })
    st.download_button("Download CSV", data=state.tweets_csv(records), file_name="streampulse_tweets.csv",
                       mime="text/csv", key="csv_download", on_click="ignore")


# --- alerts ------------------------------------------------------------------------------------------

def alerts_section(db, settings: Settings, reader) -> None:
    from dashboard import rules_editor

    st.header("Alerts")
    rules_tab, events_tab = st.tabs(["Threshold rules", "Latest alert events"])
    with rules_tab:
        rules_editor.render(db, settings, [k.keyword for k in reader.keywords() if k.tracked],
                            editable=can_edit(settings))
    with events_tab:
        rules_editor.render_events(db, settings)
