"""The command line as a newcomer meets it: a store that can't be opened is one
line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sipwake.cli import main
from tests.conftest import DOMAIN, PG_DSN
from tests.readonly import read_only
from tests.served import run_sipwake

MISSING_PG = urlsplit(PG_DSN)._replace(path="/sipwake_does_not_exist").geturl()


@pytest.fixture(autouse=True)
def _keep_root_log_level() -> Iterator[None]:
    """main() sets the root logger's level from the configuration: undo it."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def write_config(folder: Path, store_url: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sipwake.toml"
    path.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[http]\nlisten = "127.0.0.1:0"\n[store]\nurl = "{store_url}"\n{extra}'
    )
    return path


def one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return lines[0]


# --- a store that can't be opened ----------------------------------------------


STORE_COMMANDS = [("serve",), ("user", "list"), ("user", "add", "carol", "--password", "pw")]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
async def test_missing_sqlite_folder_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/no/such/dir/x.db")
    code, out = await run_sipwake(*command, "--config", str(config), cwd=tmp_path)
    line = one_line(out)
    assert code == 2
    assert line == (
        f"sipwake: cannot open store sqlite:///{tmp_path}/no/such/dir/x.db: folder "
        f"{tmp_path}/no/such/dir does not exist (create it, or set [store] url)"
    )


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
async def test_missing_postgres_database_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = write_config(tmp_path, MISSING_PG)
    code, out = await run_sipwake(*command, "--config", str(config), cwd=tmp_path)
    line = one_line(out)
    assert code == 2
    assert line.startswith(f"sipwake: cannot open store {MISSING_PG}: database ")
    assert "'sipwake_does_not_exist' does not exist" in line and "createdb" in line


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
async def test_read_only_sqlite_file_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/ro.db")
    code, out = await run_sipwake(
        "user", "add", "alice", "--password", "pw", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, out
    with read_only(tmp_path / "ro.db"):
        code, out = await run_sipwake(*command, "--config", str(config), cwd=tmp_path)
    line = one_line(out)
    assert code == 2
    assert line == (
        f"sipwake: cannot open store sqlite:///{tmp_path}/ro.db: {tmp_path}/ro.db is "
        "read-only (make it writable for this user, or set [store] url)"
    )


def test_malformed_store_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "sqlite:///x.db?mode=ro")
    assert main(["user", "list", "--config", str(config)]) == 2
    assert one_line(capsys.readouterr().err).endswith("takes no query or fragment")
