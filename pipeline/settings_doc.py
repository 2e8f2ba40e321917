"""Print the settings as the README's configuration table: `python -m pipeline.settings_doc`."""

from __future__ import annotations

import sys

from pipeline.settings import Settings


def default_text(field) -> str:
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, list):
        value = ",".join(value)
    return "(unset)" if value is None else str(value)


def table() -> str:
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = default_text(field).replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
