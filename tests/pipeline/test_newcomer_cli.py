"""CLI and lifecycle defects a newcomer found: up-front config errors, orphaned UI children and busy
ports, stopped-stage heartbeats, health usage errors, dead-letters with the DB down, stop while retrying."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, StageStopped
from pipeline.runner import Runner, check_ports_free, check_source_options

ROOT = Path(__file__).resolve().parents[2]


def cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_", "X_"))}
    full.update({"ALERTS_ENABLED": "false", **env})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=ROOT)


# --- 5: config errors up front -----------------------------------------------------------------

def test_run_with_speed_zero_is_one_error_line_before_anything_starts(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "hi"}\n', encoding="utf-8")
    db = tmp_path / "never.db"
    done = cli(["run", "--no-ui", "--source", "replay", "--file", str(data), "--speed", "0"],
               {"DATABASE_URL": f"sqlite:///{db}"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: --speed")
    assert "Traceback" not in done.stderr and not db.exists()


def test_source_options_are_checked_before_the_database(tmp_path, make_settings):
    csv_file = tmp_path / "x.csv"
    csv_file.write_text("id,message\n1,hello\n", encoding="utf-8")
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'never.db'}", alerts_enabled=False)
    for kwargs, match in ((dict(source="replay", file=str(csv_file)), "REPLAY_TEXT_COLUMN"),
                          (dict(source="replay", file=str(tmp_path / "missing.jsonl")), "does not exist"),
                          (dict(source="x"), "X_BEARER_TOKEN")):
        with pytest.raises(ConfigError, match=match):
            Runner(settings, ui=False, **kwargs).run(threading.Event())
    assert not (tmp_path / "never.db").exists()
    check_source_options(make_settings(x_fallback_to_mock=True), source="x", file=None, speed=None)


@pytest.mark.parametrize("speed", ["1e-300", "nan", "inf", "-inf", "1e7", "0.0001"])
def test_out_of_range_speeds_are_refused_up_front(make_settings, speed):
    for source in ("replay", "mock"):
        with pytest.raises(ConfigError, match="--speed"):
            check_source_options(make_settings(), source=source, file="unused.jsonl", speed=speed)
    check_source_options(make_settings(), source="mock", file=None, speed="1e-3")
    check_source_options(make_settings(), source="mock", file=None, speed="1e6")


def test_bad_mock_drift_and_bad_speed_are_one_error_line_exit_2(tmp_path):
    db = tmp_path / "never.db"
    done = cli(["run", "--no-ui", "--source", "mock"],
               {"DATABASE_URL": f"sqlite:///{db}", "MOCK_DRIFT": "Tesla:-0.8@60"})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "MOCK_DRIFT" in last, done.stderr
    assert "Traceback" not in done.stderr and not db.exists()
    # produce (Kafka mode) checks before it connects anywhere: port 1 is never dialled
    done = cli(["produce", "--source", "mock", "--speed", "nan"],
               {"DATABASE_URL": f"sqlite:///{db}", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: --speed"), done.stderr
    assert "Traceback" not in done.stderr and not db.exists()


# --- 6: children die with the parent; busy ports fail fast; dashboard bind address -------------

def test_ui_children_die_when_the_run_is_killed(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pipeline.runner import _popen
        child = _popen([sys.executable, "-c", "import time; time.sleep(60)"], env={})
        print(child.pid, flush=True)
        time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            try:  # the child is ours to reap only if it was re-parented to us; ignore otherwise
                os.waitpid(child_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        else:
            os.kill(child_pid, signal.SIGKILL)
            raise AssertionError("the child outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_a_busy_port_fails_fast_naming_the_setting(make_settings):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="API_PORT"):
            check_ports_free(make_settings(api_host="127.0.0.1", api_port=port, dashboard_port=1 + port))
        with pytest.raises(ConfigError, match="DASHBOARD_PORT"):
            check_ports_free(make_settings(api_host="127.0.0.1", api_port=1 + port, dashboard_port=port))


def test_dashboard_binds_the_configured_host(make_settings, monkeypatch):
    from pipeline import runner

    started: list[list[str]] = []
    monkeypatch.setattr(runner, "_popen", lambda cmd, env: started.append(cmd) or object())
    runner.start_ui(make_settings())
    dash = next(cmd for cmd in started if "streamlit" in cmd)
    assert dash[dash.index("--server.address") + 1] == runner.dashboard_host(make_settings()) == "127.0.0.1"


# --- 7/8: a finished replay keeps beating (done); a clean stop marks every stage stopped --------

def test_finished_replay_beats_done_and_a_clean_stop_marks_stages_stopped(tmp_path, make_settings,
                                                                          sqlite_url):
    from db.database import open_database
    from db.queries import heartbeats
    from pipeline.health import check_stage

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"text": f"good {i}", "keyword": "K"}) + "\n" for i in range(3)),
                    encoding="utf-8")
    settings = make_settings(database_url=sqlite_url, alerts_enabled=False, heartbeat_interval_seconds=0.2)
    db = open_database(settings)
    stop = threading.Event()
    runner = Runner(settings, source="replay", file=str(data), ui=False, db=db)
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        def producer_row():
            rows = [h for h in heartbeats(db) if h.stage == "producer-replay"]
            return rows[0] if rows and rows[0].details.get("state") == "done" else None

        deadline = time.monotonic() + 20
        while producer_row() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first = producer_row()
        assert first is not None, heartbeats(db)
        time.sleep(1.0)
        assert producer_row().last_seen > first.last_seen  # still beating after the file is played
        assert check_stage(settings, stage="producer", max_age=0.9).ok
    finally:
        stop.set()
        thread.join(30)
    rows = {h.stage: h for h in heartbeats(db)}
    assert {"producer-replay", "processor", "ingestor"} <= set(rows)
    assert all(h.details.get("state") == "stopped" for h in rows.values()), rows
    stopped = check_stage(settings, stage="processor")
    assert not stopped.ok and "stopped at" in stopped.message
    db.engine.dispose()


def test_stopped_producer_heartbeat_carries_its_real_total(tmp_path, make_settings, sqlite_url):
    from db.database import open_database
    from db.queries import heartbeats
    from pipeline.runner import StageThread

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"text": f"good {i}", "keyword": "K"}) + "\n" for i in range(4)),
                    encoding="utf-8")
    settings = make_settings(database_url=sqlite_url, alerts_enabled=False)
    db = open_database(settings)
    runner = Runner(settings, source="replay", file=str(data), ui=False, db=db)
    # --exit-when-done can stop before the "done" beat exists: the final row comes from a new monitor
    producer = StageThread("producer-replay", lambda: 4)
    producer.start()
    assert producer.join(5)
    runner.mark_stopped(producer, None)
    row = next(h for h in heartbeats(db) if h.stage == "producer-replay")
    assert row.details["state"] == "stopped" and row.details["total"] == 4, row.details

    assert Runner(settings, source="replay", file=str(data), ui=False, db=db,
                  exit_when_done=True).run(threading.Event()) == 0
    row = next(h for h in heartbeats(db) if h.stage == "producer-replay")
    assert row.details["state"] == "stopped" and row.details["total"] == 4, row.details
    db.engine.dispose()


# --- 9: health usage errors ---------------------------------------------------------------------

def test_health_usage_errors_exit_2_without_a_traceback(capsys):
    from pipeline.health import main

    assert main(["--url", "not-a-url"]) == 2
    assert "not an http" in capsys.readouterr().out
    assert main(["--stage", "bogus"]) == 2
    out = capsys.readouterr().out
    assert "unknown stage 'bogus'" in out and "processor" in out and "producer" in out


# --- 10: dead-letters with the DB down ------------------------------------------------------------

def test_dead_letters_list_fails_fast_when_the_database_is_down():
    started = time.monotonic()
    done = cli(["dead-letters", "list"], {"DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/none",
                                          "RETRY_INITIAL_BACKOFF_SECONDS": "5"}, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: database")
    assert "p@" not in done.stderr  # password masked
    assert time.monotonic() - started < 30


# --- 11: no retry attempt (or retry log line) after a stop ---------------------------------------

def test_retry_does_not_log_or_start_another_attempt_after_stop(make_settings, caplog):
    from pipeline.stage import retry

    stop = threading.Event()
    calls = {"n": 0}

    def connect():
        calls["n"] += 1
        stop.set()  # SIGINT arrives while this (blocking) attempt is in flight
        raise OSError("connection refused")

    with caplog.at_level(logging.WARNING, logger="pipeline.stage"), pytest.raises(StageStopped):
        retry(connect, what="connect", settings=make_settings(), stop=stop)
    assert calls["n"] == 1
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
