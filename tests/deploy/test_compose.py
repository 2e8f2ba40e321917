"""docker-compose.yml cannot run here (no Docker engine), so it is checked statically: against the
compose-spec JSON schema, by `docker-compose config` where installed, and against the code: every
command exists, every variable is documented in .env.example, every setting passed is a real one."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
APP_IMAGE = "streampulse"
STAGE_SERVICES = {"producer", "processor", "ingestor", "api", "dashboard"}
# Variables the image/runtime reads that are not StreamPulse settings.
KNOWN_CONTAINER_VARS = {"HF_HOME"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} / ${VAR} substitution with an empty environment (defaults)."""
    env = env or {}
    out = INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return out.replace("$$", "$")


def strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def app_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith(f"${{STREAMPULSE_IMAGE:-{APP_IMAGE}")}


def command_of(service: dict) -> list[str]:
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    return [interpolate(part) for part in command]


def env_example() -> dict[str, str]:
    """KEY=value lines of .env.example; `# KEY=...` lines document a variable left unset."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_compose_validates_against_the_compose_spec_schema(tmp_path):
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    ok = subprocess.run([*cmd, str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The same check fails on a broken file (it is a real check, and it works offline: the schema
    # is vendored in check-jsonschema).
    broken = load_compose()
    broken["services"]["processor"]["depends_on"]["kafka-init"]["condition"] = "service_ready"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    failed = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "service_ready" in failed.stdout


def test_docker_compose_config_accepts_the_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        unavailable("docker-compose not installed (apt-get install docker-compose)")
    # Only the defaults: none of this machine's settings may leak into the interpolation.
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    run = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_every_service_command_exists_in_the_code():
    compose = load_compose()
    services = app_services(compose)
    assert STAGE_SERVICES | {"db-init"} <= set(services)
    for name, service in services.items():
        argv = command_of(service)
        if argv[:2] == ["python", "-m"]:
            module = argv[2]
            spec = importlib.util.find_spec(module)
            assert spec is not None, f"{name}: python -m {module}: no such module"
            if spec.submodule_search_locations:  # a package: `python -m` runs its __main__
                assert (Path(spec.origin).parent / "__main__.py").exists(), f"{name}: {module}/__main__.py"
            # The sub-command and its flags parse (argparse exits 0 on --help, 2 on an unknown one).
            help_run = subprocess.run([sys.executable, "-m", *argv[2:], "--help"], capture_output=True,
                                      text=True, timeout=120, cwd=ROOT)
            assert help_run.returncode == 0, f"{name}: {' '.join(argv)} --help:\n{help_run.stderr}"
        elif argv[0] == "uvicorn":
            module, _, attr = argv[1].partition(":")
            probe = subprocess.run(
                [sys.executable, "-c", f"import {module} as m; assert callable(getattr(m, {attr!r}))"],
                capture_output=True, text=True, timeout=120, cwd=ROOT)
            assert probe.returncode == 0, f"{name}: uvicorn {argv[1]}:\n{probe.stderr}"
            assert "--host" in argv and argv[argv.index("--host") + 1] == "0.0.0.0"
        elif argv[:2] == ["streamlit", "run"]:
            assert (ROOT / argv[2]).is_file(), f"{name}: streamlit run {argv[2]}: no such file"
            assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
        else:
            pytest.fail(f"{name}: unrecognised command {argv}")
    producer = command_of(services["producer"])
    assert producer[:5] == ["python", "-m", "pipeline", "produce", "--source"] and producer[5] == "mock"


def test_every_healthcheck_command_exists():
    compose = load_compose()
    for name, service in app_services(compose).items():
        if name == "db-init":
            continue
        test = service["healthcheck"]["test"]
        assert test[:5] == ["CMD", "python", "-m", "pipeline", "health"], name
        probe = subprocess.run([sys.executable, "-m", "pipeline", "health", *test[5:], "--help"],
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert probe.returncode == 0, f"{name}: {test}: {probe.stderr}"
    assert "pg_isready" in " ".join(compose["services"]["timescaledb"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in " ".join(compose["services"]["kafka"]["healthcheck"]["test"])


def test_every_variable_is_in_env_example():
    compose = load_compose()
    used = {m.group(1) for s in strings(compose) for m in INTERPOLATION.finditer(s)}
    # `KEY:` with no value passes the host's variable through; document those too.
    passed_through = {k for svc in compose["services"].values()
                      for k, v in (svc.get("environment") or {}).items() if v is None}
    documented = env_example()
    missing = sorted((used | passed_through) - set(documented))
    assert not missing, f"in docker-compose.yml but not in .env.example: {missing}"
    unused = sorted(set(documented) - used - passed_through)
    assert not unused, f"in .env.example but not used by docker-compose.yml: {unused}"


def test_env_example_values_are_the_compose_defaults():
    compose = load_compose()
    documented = env_example()
    for s in strings(compose):
        for m in INTERPOLATION.finditer(s):
            if m.group(2) is not None:
                assert documented[m.group(1)] == m.group(2), (
                    f"{m.group(1)}: .env.example says {documented[m.group(1)]!r}, compose {m.group(2)!r}")


def test_env_example_holds_no_real_secrets():
    secrets = {k: v for k, v in env_example().items()
               if re.search(r"TOKEN|PASSWORD|API_KEY|SECRET", k)}
    assert {"X_BEARER_TOKEN", "API_KEY", "SMTP_PASSWORD", "DASHBOARD_PASSWORD"} <= set(secrets)
    for key, value in secrets.items():
        assert value in ("", "streampulse"), f"{key} has a value in .env.example"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored  # the real one is never committed


def test_env_passed_to_app_services_are_settings_fields():
    from pipeline.settings import Settings

    fields = set(Settings.model_fields)
    for name, service in app_services(load_compose()).items():
        for key in service.get("environment") or {}:
            assert key.lower() in fields or key in KNOWN_CONTAINER_VARS, (
                f"{name}: {key} is neither a Settings field nor a known container variable")


def test_compose_defaults_build_valid_settings(monkeypatch):
    from pipeline.settings import Settings

    for name, service in app_services(load_compose()).items():
        env = {k: interpolate(str(v)) for k, v in (service.get("environment") or {}).items()
               if v is not None}
        for key in list(os.environ):
            if key.lower() in Settings.model_fields:
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.kafka_bootstrap_servers == "kafka:9092", name
        assert settings.database_url.startswith("postgresql+psycopg2://") and "@timescaledb:5432/" in \
            settings.database_url
        # Empty values mean unset: no empty API key that would lock writes behind "".
        assert settings.api_key is None and settings.x_bearer_token is None, name
        assert settings.keywords == ["Tesla", "United", "Apple"]


def test_env_example_loads_as_settings():
    from pipeline.settings import Settings

    settings = Settings(_env_file=str(ENV_EXAMPLE))
    assert settings.keywords == ["Tesla", "United", "Apple"]
    assert settings.smtp_host == "mailpit" and settings.api_key is None and settings.torch_threads is None


def test_stack_shape():
    compose = load_compose()
    services = compose["services"]
    assert "env_file" not in COMPOSE.read_text()  # a fresh clone has no .env
    assert {"kafka", "kafka-init", "timescaledb", "mailpit", *STAGE_SERVICES} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert not any("zookeeper" in k.lower() for k in kafka["environment"])
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = interpolate(init["command"][0])
    for topic in ("raw_tweets", "analyzed_tweets", "dead_letters"):
        assert topic in script
    assert "--partitions 6" in script and "--if-not-exists" in script
    tsdb = services["timescaledb"]
    assert re.match(r"timescale/timescaledb:\$\{TIMESCALEDB_TAG:-latest-pg1[67]\}$", tsdb["image"])
    assert any(v.split(":")[0] == "pgdata" for v in tsdb["volumes"]) and "pgdata" in compose["volumes"]
    # scale-out: nothing that pins the processor to one container
    processor = services["processor"]
    assert "container_name" not in processor and "ports" not in processor
    assert not any("container_name" in svc for svc in services.values())
    # the HF model cache is a named volume at the image's HF_HOME
    hf_home = re.search(r"HF_HOME=(\S+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert f"hf-cache:{hf_home}" in processor["volumes"] and "hf-cache" in compose["volumes"]
    assert processor["environment"]["HF_HOME"] == hf_home
    # start order: stages wait for topics and schema; the API (with the alert evaluator) for mailpit
    for name in ("producer", "processor", "ingestor"):
        deps = services[name]["depends_on"]
        assert deps["kafka-init"]["condition"] == "service_completed_successfully", name
        assert deps["db-init"]["condition"] == "service_completed_successfully", name
    assert services["db-init"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    api_env = services["api"]["environment"]
    assert interpolate(api_env["SMTP_HOST"]) == "mailpit" and interpolate(api_env["SMTP_PORT"]) == "1025"
    assert {"8025:8025", "1025:1025"} <= {interpolate(p) for p in services["mailpit"]["ports"]}
    for name in STAGE_SERVICES | {"kafka", "timescaledb", "mailpit"}:
        assert "healthcheck" in services[name], name


def test_alert_evaluator_sees_the_x_fallback_setting():
    # The producer tags fallback tweets `mock`; the evaluator (in the api service) leaves mock tweets
    # out only when it sees X_FALLBACK_TO_MOCK too, so both services must get the same value.
    services = app_services(load_compose())
    assert services["api"]["environment"]["X_FALLBACK_TO_MOCK"] == \
        services["producer"]["environment"]["X_FALLBACK_TO_MOCK"]
