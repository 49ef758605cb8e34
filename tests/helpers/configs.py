"""Config files for tests that run the installed `sipwake` commands."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DOMAIN


def write_config(folder: Path, store_url: str, extra: str = "") -> Path:
    """`folder`/sipwake.toml: our test domain, listeners on port 0, the given store."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sipwake.toml"
    path.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[http]\nlisten = "127.0.0.1:0"\n[store]\nurl = "{store_url}"\n{extra}'
    )
    return path
