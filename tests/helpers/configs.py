"""Config files for tests that run the installed `sipwake` commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.helpers.node import DOMAIN


def write_config(folder: Path, store_url: str, extra: str = "") -> Path:
    """`folder`/sipwake.toml: our test domain, listeners on port 0, the given store."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sipwake.toml"
    path.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[http]\nlisten = "127.0.0.1:0"\n[store]\nurl = "{store_url}"\n{extra}'
    )
    return path


def schema_keys(section: object, prefix: str = "") -> dict[str, Any]:
    """Every leaf key of the configuration schema, dotted ("push.apns.team_id") → its
    default (`schema_keys(Config())`)."""
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            keys.update(schema_keys(value, f"{prefix}{f.name}."))
        else:
            keys[f"{prefix}{f.name}"] = value
    return keys
