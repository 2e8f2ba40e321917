"""The README is part of the product: its commands, config table and CI hook must stay true."""

from __future__ import annotations

import re

from pipeline.settings import Settings
from pipeline.settings_doc import default_text
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_two_commands_come_first_and_ci_calls_the_test_command():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"


def test_configuration_table_matches_the_settings_class():
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", README, re.M))
    fields = {name.upper(): field for name, field in Settings.model_fields.items()}
    assert set(rows) == set(fields), (
        f"missing from README: {sorted(set(fields) - set(rows))}; "
        f"not settings: {sorted(set(rows) - set(fields))}"
    )
    for name, field in fields.items():
        assert rows[name].replace("\\|", "|") == default_text(field), f"{name}: README default is stale"
