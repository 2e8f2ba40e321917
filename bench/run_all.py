"""Run every benchmark in turn and print their JSON figure lines: `python -m bench.run_all`.

Each benchmark is its own process (they start brokers and databases of their own); the last line
of each one's output is its JSON figures. One JSON object mapping benchmark -> figures is printed
last. `--only storage,api` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

BENCHES = ("pipeline", "storage", "api", "dashboard", "alerts", "transformer")


def last_json_line(output: str) -> dict | None:
    for line in reversed(output.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = parser.parse_args(argv)
    figures: dict[str, dict | None] = {}
    failed = False
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        print(f"== bench.bench_{name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"bench.bench_{name}"], capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr[-4000:])
        figures[name] = last_json_line(proc.stdout)
        failed |= proc.returncode != 0 or figures[name] is None
    print(json.dumps(figures))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
