"""sipwake.example.toml is the configuration's documentation: it must name every key of
the schema (config.py's dataclasses) and no other, each with a comment, at its default,
and it must load."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sipwake.config import Config, load_config
from tests.helpers.configs import schema_keys

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "sipwake.example.toml"


def example_keys(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            keys.update(example_keys(value, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = value
    return keys


def test_the_example_names_every_key_and_no_other() -> None:
    schema = schema_keys(Config())
    example = example_keys(tomllib.loads(EXAMPLE.read_text()))
    missing = sorted(set(schema) - set(example))
    unknown = sorted(set(example) - set(schema))
    assert missing == [], f"add these keys to {EXAMPLE.name}, with a comment"
    assert unknown == [], f"these keys of {EXAMPLE.name} are not in config.py"


def test_the_example_shows_the_defaults() -> None:
    schema = schema_keys(Config())
    example = example_keys(tomllib.loads(EXAMPLE.read_text()))
    differ = {k: (example[k], schema[k]) for k in schema if example.get(k) != schema[k]}
    assert differ == {}, "example value, default"


def test_every_key_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if "=" not in line or line.startswith(("#", "[")):
            continue
        # a run of keys may share the comment above the run (t1, t2, t4)
        j = i - 1
        while j >= 0 and "=" in lines[j] and not lines[j].startswith("#"):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            bare.append(line)
    assert bare == []


def test_the_example_loads(tmp_path: Path) -> None:
    config = load_config(str(EXAMPLE), env={})
    assert config.sip.domain == "localhost"
    # a relative SQLite path in a file is the file's folder's
    assert config.store.url == f"sqlite:///{ROOT}/sipwake.db"
