"""The project's .streamlit/config.toml, as Streamlit itself resolves it from the repo root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RESOLVE = """
import sys
from streamlit import config
from streamlit.web import bootstrap
flags = {"server.address": sys.argv[1]} if len(sys.argv) > 1 else {}
bootstrap.load_config_options(flag_options=flags)
print(config.get_option("server.address"))
"""


def resolved_address(*flag: str) -> str:
    done = subprocess.run([sys.executable, "-c", RESOLVE, *flag], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_standalone_dashboard_binds_loopback_but_an_explicit_address_wins():
    assert resolved_address() == "127.0.0.1"  # `streamlit run dashboard/app.py` from the repo root
    assert resolved_address("0.0.0.0") == "0.0.0.0"  # what docker-compose passes
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert '"--server.address", "0.0.0.0"' in compose
