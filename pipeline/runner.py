"""`python -m pipeline run`: the whole product in one process.

The producer, processor, ingestor and alert evaluator run as threads over one bus (the embedded
in-process bus and SQLite by default, Kafka when KAFKA_BOOTSTRAP_SERVERS is set) and one database;
unless --no-ui the API (uvicorn) and the dashboard (streamlit) run as child processes.

Ctrl-C (or SIGTERM) stops the producer first, gives the processor and ingestor a few seconds to
drain what is already on the bus (on the embedded bus that backlog lives in memory only), then stops
them after their current batch, then the children. With --exit-when-done a replay ends by itself
once the file is played and everything from it is stored (or dead-lettered); without it a played
replay's heartbeat stays fresh with details {"state": "done"}.

Before anything starts: --source/--file/--speed/X_BEARER_TOKEN/MOCK_DRIFT are checked, and (unless --no-ui)
API_PORT and DASHBOARD_PORT must be free, else one `error:` line and exit 2. The children get
PR_SET_PDEATHSIG (Linux), so even a kill -9 of the run takes them down. On a clean stop every stage's
heartbeat row is marked details {"state": "stopped", "stopped_at": ...}.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bus import make_bus
from pipeline.bus.base import Bus
from pipeline.bus.memory import MemoryBus
from pipeline.errors import ConfigError, StageStopped
from pipeline.ingestor import Ingestor
from pipeline.processor import Processor
from pipeline.settings import Settings
from pipeline.stage import StageMonitor, describe, open_db

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DRAIN_SECONDS = 10.0


def say(line: str) -> None:
    """CLI output for the person at the terminal (logs go to stderr)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class StageThread:
    name: str
    target: Callable[[], Any]
    thread: threading.Thread | None = None
    error: BaseException | None = None
    result: Any = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        def body() -> None:
            try:
                self.result = self.target()
            except StageStopped:
                pass
            except BaseException as exc:  # reported by the runner, which stops the rest
                self.error = exc
                logger.exception("%s failed: %s", self.name, describe(exc))
            finally:
                self.done.set()

        self.thread = threading.Thread(target=body, name=self.name, daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done.is_set()


def check_source_options(settings: Settings, *, source: str, file: str | None, speed: str | None) -> None:
    """Raise ConfigError for a wrong --source/--file/--speed or a missing X_BEARER_TOKEN, before the
    database or any stage starts (so it is one `error:` line and exit 2, not a stage crash)."""
    from pipeline.producers.replay import check_file, parse_speed

    if source not in ("mock", "replay", "x"):
        raise ConfigError(f"unknown --source {source!r} (mock, replay or x)")
    # --speed is only used by replay, but a nan/inf/1e-300 typo is still an error, not silently ignored
    parse_speed(speed or "max")
    if source == "replay":
        if not file:
            raise ConfigError("--source replay needs --file PATH (a .csv or .jsonl export)")
        check_file(Path(file), settings)
    elif source == "x":
        token = settings.x_bearer_token
        if (token is None or not token.get_secret_value().strip()) and not settings.x_fallback_to_mock:
            raise ConfigError("X_BEARER_TOKEN is not set: --source x needs an X API v2 bearer token "
                              "(or set X_FALLBACK_TO_MOCK=true to produce mock tweets meanwhile)")
    if source == "mock" or (source == "x" and settings.x_fallback_to_mock):
        from pipeline.producers.mock import parse_drift

        parse_drift(settings.mock_drift)  # a bad MOCK_DRIFT is one error line, not a producer crash


def producer_target(settings: Settings, *, source: str, bus: Bus, db: Any, stop: threading.Event,
                    file: str | None, speed: str | None, retime: bool,
                    keywords: list[str] | None) -> Callable[[], Any]:
    """The producer for --source, imported only when chosen (x needs tweepy and a token)."""
    if source == "mock":
        from pipeline.producers.mock import run_mock_producer

        return lambda: run_mock_producer(settings, bus=bus, db=db, stop=stop, keywords=keywords)
    if source == "replay":
        from pipeline.errors import ConfigError
        from pipeline.producers.replay import run_replay_producer

        if not file:
            raise ConfigError("--source replay needs --file PATH (a .csv or .jsonl export)")
        return lambda: run_replay_producer(settings, bus=bus, db=db, stop=stop, file=file,
                                           speed=speed or "max", retime=retime, keywords=keywords)
    if source == "x":
        from pipeline.producers.x import run_x_producer

        return lambda: run_x_producer(settings, bus=bus, db=db, stop=stop, keywords=keywords)
    from pipeline.errors import ConfigError

    raise ConfigError(f"unknown --source {source!r} (mock, replay or x)")


def evaluator_target(settings: Settings, db: Any, stop: threading.Event) -> Callable[[], Any] | None:
    if not settings.alerts_enabled:
        logger.info("alerts disabled (ALERTS_ENABLED=false)")
        return None
    try:
        from api.alerts.evaluator import AlertEvaluator
    except ImportError as exc:
        logger.warning("alert evaluator not available (%s); running without alerts", exc)
        return None
    evaluator = AlertEvaluator(settings, db)
    return lambda: evaluator.run(stop)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = settings.database_url  # the children must read the same database
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def dashboard_host(settings: Settings) -> str:
    return getattr(settings, "dashboard_host", "127.0.0.1")


def check_ports_free(settings: Settings) -> None:
    """Raise ConfigError naming the setting when API_PORT or DASHBOARD_PORT is taken (e.g. by the
    children of a run that was killed), rather than print URLs and then run headless."""
    for name, host, port in (("API_PORT", settings.api_host, settings.api_port),
                             ("DASHBOARD_PORT", dashboard_host(settings), settings.dashboard_port)):
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn/tornado bind
                sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"{name}={port} on {host} is already in use ({exc.strerror}): stop what "
                              f"holds it (a previous run's API/dashboard?) or set {name}, or use --no-ui"
                              ) from exc


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the parent dies, even by kill -9 (Linux only),
    so the API and dashboard never outlive the run as orphans holding their ports."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 15)  # PR_SET_PDEATHSIG = 1, SIGTERM = 15
    except (OSError, AttributeError):
        pass


def _popen(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=preexec)


def start_ui(settings: Settings) -> list[tuple[str, subprocess.Popen]]:
    """The API and the dashboard as child processes (each skipped with a warning if not present)."""
    children: list[tuple[str, subprocess.Popen]] = []
    env = _child_env(settings)
    if (ROOT / "api" / "main.py").exists():
        cmd = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", settings.api_host,
               "--port", str(settings.api_port)]
        children.append(("api", _popen(cmd, env)))
    else:
        logger.warning("api/main.py not found; the API is not started")
    app = ROOT / "dashboard" / "app.py"
    if app.exists():
        cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port",
               str(settings.dashboard_port), "--server.address", dashboard_host(settings),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        children.append(("dashboard", _popen(cmd, env)))
    else:
        logger.warning("dashboard/app.py not found; the dashboard is not started")
    return children


def stop_children(children: list[tuple[str, subprocess.Popen]]) -> None:
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()
    for name, proc in children:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in 10 s; killing it", name)
            proc.kill()
            proc.wait(timeout=5)


def producer_monitor(settings: Settings, stage: str, *, db: Any, total: int, source: str) -> StageMonitor:
    """A heartbeat for a producer that has returned (its own monitor is gone): it carries the real
    total, so the final "stopped" row (GET /health) does not say total 0 after 14,640 published."""
    monitor = StageMonitor(stage, settings, db=lambda: db)
    monitor.total = total
    monitor.details = {"source": source}
    return monitor


class Runner:
    def __init__(self, settings: Settings, *, source: str = "mock", file: str | None = None,
                 speed: str | None = None, retime: bool = False, keywords: list[str] | None = None,
                 ui: bool = True, exit_when_done: bool = False, bus: Bus | None = None,
                 db: Any = None) -> None:
        self.settings = settings
        self.source = source
        self.file = file
        self.speed = speed
        self.retime = retime
        self.keywords = keywords
        self.ui = ui
        self.exit_when_done = exit_when_done
        self.bus = bus
        self.db = db
        self.producer_stop = threading.Event()
        self.stage_stop = threading.Event()
        self.processor: Processor | None = None
        self.ingestor: Ingestor | None = None

    def all_stored(self, producer: StageThread) -> bool:
        """True once the producer is done and everything it sent went through both stages."""
        if not producer.done.is_set() or self.processor is None or self.ingestor is None:
            return False
        s = self.settings
        if isinstance(self.bus, MemoryBus):
            return (self.bus.lag(s.raw_topic, self.processor.group_id) == 0
                    and self.bus.lag(s.analyzed_topic, self.ingestor.group_id) == 0)
        pm, im = self.processor.monitor, self.ingestor.monitor
        if pm is None or im is None:
            return False
        sent = producer.result or 0
        processed = pm.total + pm.failed
        return processed >= sent and im.total + im.failed >= processed

    def run(self, stop: threading.Event) -> int:
        s = self.settings
        check_source_options(s, source=self.source, file=self.file, speed=self.speed)
        if self.ui:
            check_ports_free(s)
        db = self.db = self.db or open_db(s, stop)
        bus = self.bus = self.bus or make_bus(s)
        producer = StageThread(f"producer-{self.source}", producer_target(
            s, source=self.source, bus=bus, db=db, stop=self.producer_stop, file=self.file, speed=self.speed,
            retime=self.retime, keywords=self.keywords))
        self.processor = Processor(s, bus=bus, db=db)
        self.ingestor = Ingestor(s, bus=bus, db=db)
        stages = [StageThread("processor", lambda: self.processor.run(self.stage_stop)),
                  StageThread("ingestor", lambda: self.ingestor.run(self.stage_stop))]
        evaluator = evaluator_target(s, db, self.stage_stop)
        if evaluator is not None:
            stages.append(StageThread("alert-evaluator", evaluator))
        for stage in stages:
            stage.start()
        producer.start()
        children = start_ui(s) if self.ui else []
        where = "embedded bus + " if isinstance(bus, MemoryBus) else f"Kafka {s.kafka_bootstrap_servers} + "
        done_beat: StageMonitor | None = None
        say(f"StreamPulse running ({where}{db.mode}, source {self.source}). Ctrl-C to stop.")
        if self.ui:
            say(f"  Dashboard: http://localhost:{s.dashboard_port}")
            say(f"  API:       http://{s.api_host}:{s.api_port}  (docs at /docs)")
        failed = False
        try:
            while not stop.is_set():
                if any(t.done.is_set() for t in stages) or producer.error is not None:
                    failed = True
                    logger.error("a stage stopped unexpectedly; stopping everything")
                    break
                if self.exit_when_done and self.all_stored(producer):
                    logger.info("replay done and everything stored; stopping")
                    break
                if producer.done.is_set() and producer.error is None:
                    # a played replay is finished, not dead: keep its heartbeat row fresh (state done)
                    if done_beat is None:
                        done_beat = StageMonitor(producer.name, s, db=lambda: db)
                        done_beat.total = producer.result or 0
                        done_beat.details = {"state": "done"}
                        done_beat.beat()
                    done_beat.tick()
                for name, proc in children:
                    if proc.poll() is not None and not getattr(proc, "_reported", False):
                        proc._reported = True  # type: ignore[attr-defined]
                        logger.warning("%s exited with code %s", name, proc.returncode)
                stop.wait(0.2)
        finally:
            self.shutdown(producer, stages, children)
            self.mark_stopped(producer, done_beat)
        errors = [t for t in [producer, *stages] if t.error is not None]
        return 1 if failed or errors else 0

    def mark_stopped(self, producer: StageThread, done_beat: StageMonitor | None) -> None:
        """Heartbeat rows of this run say details["state"] == "stopped" after a clean shutdown."""
        monitors = [m for m in (self.processor and self.processor.monitor,
                                self.ingestor and self.ingestor.monitor, done_beat) if m is not None]
        if done_beat is None and producer.done.is_set():
            monitors.append(producer_monitor(self.settings, producer.name, db=self.db,
                                             total=producer.result or 0, source=self.source))
        for monitor in monitors:
            monitor.mark_stopped()

    def shutdown(self, producer: StageThread, stages: list[StageThread],
                 children: list[tuple[str, subprocess.Popen]]) -> None:
        logger.info("stopping: producer first")
        self.producer_stop.set()
        producer.join(15)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and not all(t.done.is_set() for t in stages):
            if self.all_stored(producer) or not producer.done.is_set():
                break
            time.sleep(0.1)
        self.stage_stop.set()
        for stage in stages:
            if not stage.join(30):
                logger.warning("%s did not stop within 30 s", stage.name)
        stop_children(children)
        logger.info("stopped")
