"""README's configuration table names every key of the schema (config.py), and
nothing that is not one: an operator reads the table, not the dataclasses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from sipwake.config import Config

README = Path(__file__).resolve().parent.parent / "README.md"


def schema_keys(section: object, path: str = "") -> set[str]:
    """Every leaf key as "section.key" ("push.apns.team_id")."""
    keys: set[str] = set()
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        name = f"{path}.{f.name}" if path else f.name
        keys |= schema_keys(value, name) if dataclasses.is_dataclass(value) else {name}
    return keys


def documented_keys() -> set[str]:
    """Rows of the table look like | `[sip] t1`, `t2`, `t4` | default | meaning |."""
    keys: set[str] = set()
    for line in README.read_text().splitlines():
        m = re.match(r"\| `\[([\w.]+)\] (\w+)`((?:, `\w+`)*) \|", line)
        if m:
            section = m.group(1)
            for key in [m.group(2), *re.findall(r"`(\w+)`", m.group(3))]:
                keys.add(f"{section}.{key}")
    return keys


def test_every_key_is_in_the_readme_table() -> None:
    documented, schema = documented_keys(), schema_keys(Config())
    assert schema - documented == set(), "add these keys to README's configuration table"
    assert documented - schema == set(), "README documents keys the schema does not have"


def test_log_keys_are_documented() -> None:
    assert {"log.level", "log.format", "log.sip_trace"} <= documented_keys()
