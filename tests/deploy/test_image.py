"""The one Dockerfile and its build context, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        parts = path.split("/")
        return any(fnmatch.fnmatch(p, tail) for p in parts) or fnmatch.fnmatch(path, pattern)
    # A pattern that names a directory covers everything under it.
    parts = path.split("/")
    return any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts)))


def in_context(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes."""
    included = True
    for negated, pattern in patterns:
        if _matches(path, pattern):
            included = negated
    return included


def repo_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT, check=True)
    return [p for p in listed.stdout.splitlines() if (ROOT / p).is_file()]


def test_slim_base_non_root_user_hf_cache_and_default_command():
    ops = instructions()
    assert ops[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(arg for op, arg in ops if op == "ENV")
    hf_home = re.search(r"HF_HOME=(\S+)", env).group(1)
    assert hf_home.startswith("/home/app/")  # owned by the non-root user (created before USER)
    assert any(op == "CMD" and "pipeline" in arg for op, arg in ops)
    # dependencies are installed before the code is copied (a code edit does not reinstall them)
    order = [op for op, _ in ops]
    first_pip = next(i for i, (op, arg) in enumerate(ops) if op == "RUN" and "pip install" in arg)
    copy_code = max(i for i, op in enumerate(order) if op == "COPY")
    assert first_pip < copy_code
    # torch from the CPU wheel index, at the version requirements.txt pins
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE and "grep -E '^torch=='" in DOCKERFILE


def test_requirements_are_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line or line.startswith("-r"):
                continue
            assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[\w.+]+$", line), f"{name}: unpinned {line!r}"


def test_build_context_is_small_and_holds_what_the_services_run():
    patterns = dockerignore_patterns()
    files = repo_files()
    sent = [p for p in files if in_context(p, patterns)]
    for needed in ("requirements.txt", "pipeline/__init__.py", "pipeline/health.py",
                   "db/__init__.py", "api/main.py", "dashboard/app.py"):
        assert needed in files, f"{needed} missing from the repo"
        assert needed in sent, f"{needed} would not reach the image"
    for left_out in ("tests/conftest.py", "docker-compose.yml", ".env.example", "Makefile"):
        assert left_out not in sent
    assert not any(p.startswith((".git/", ".venv/", "data/", "tests/", "bench/")) for p in sent)
    assert not any("__pycache__" in p for p in sent)
    # the ignore rules themselves: a virtualenv or data dir that exists locally stays out too
    for path in (".venv/bin/python", "data/streampulse.db", ".git/HEAD", "pipeline/__pycache__/x.pyc"):
        assert not in_context(path, patterns), path
    size = sum((ROOT / p).stat().st_size for p in sent)
    assert size < 5_000_000, f"build context {size} bytes"
