"""The command line as a newcomer meets it: mistakes are one line on stderr and exit 2,
never a traceback; users are valid SIP user parts; a config file's relative SQLite
path is the file's; warnings (a misspelled variable, what an empty secret costs) are
log lines that say what to do."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sipwake.cli import check_username, main
from sipwake.sip.digest import ha1
from tests.helpers.configs import write_config
from tests.helpers.node import DOMAIN, PG_DSN, ServerFactory, make_config
from tests.helpers.readonly import read_only
from tests.served import run_sipwake

MISSING_PG = urlsplit(PG_DSN)._replace(path="/sipwake_does_not_exist").geturl()


@pytest.fixture(autouse=True)
def _keep_root_log_level() -> Iterator[None]:
    """main() sets the root logger's level from the configuration: undo it."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


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


# --- user names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a b", "contains a space"),
        ("x@y", "contains '@': give the user part only"),
        ("bob\x00", "contains a control character"),
        ("tab\there", "contains a space"),
        ("100%", "contains a '%' that does not start a %XX escape"),
        ("a%zz", "contains a '%' that does not start a %XX escape"),
        ("zoë", "contains 'ë'"),
        ("<bob>", "contains '<'"),
        ('"bob"', """contains '"'"""),
        ("a:b", "contains ':'"),
    ],
)
def test_user_add_refuses_what_is_no_sip_user_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, why: str
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/users.db")
    assert main(["user", "add", name, "--password", "pw", "--config", str(config)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"sipwake: user name {name!r} {why}"), line
    assert not (tmp_path / "users.db").exists()  # refused before the store was opened


def test_user_add_takes_every_rfc3261_user_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/users.db")
    names = ["alice", "+4930123456", "o'neil.(home)", "a%20b", "x&y=z+$,;?/-_.!~*"]
    for name in names:
        assert main(["user", "add", name, "--password", "pw", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--config", str(config)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["AOR", "CREATED", "(UTC)"]
    assert sorted(row.split()[0] for row in rows) == sorted(f"sip:{n}@{DOMAIN}" for n in names)


def test_check_username() -> None:
    assert check_username("") == "a user name must not be empty"
    assert check_username("alice") is None
    assert check_username("%41%4a") is None


def test_a_malformed_user_stored_earlier_can_be_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/users.db")
    assert main(["user", "list", "--config", str(config)]) == 0  # creates the store
    with sqlite3.connect(tmp_path / "users.db") as db:
        db.execute(
            "INSERT INTO users (username, domain, ha1_md5, ha1_sha256, created_at) "
            "VALUES ('a b', ?, 'm', 's', 0)",
            (DOMAIN,),
        )
    db.close()
    assert main(["user", "del", "a b", "--config", str(config)]) == 0
    assert f"user a b@{DOMAIN} deleted" in capsys.readouterr().out


def test_user_passwd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/users.db")
    assert main(["user", "add", "alice", "--password", "one", "--config", str(config)]) == 0
    with sqlite3.connect(tmp_path / "users.db") as db:
        before = db.execute("SELECT created_at FROM users").fetchone()[0]
    db.close()
    assert main(["user", "passwd", "alice", "--password", "two", "--config", str(config)]) == 0
    assert f"password of sip:alice@{DOMAIN} changed" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "users.db") as db:
        rows = db.execute("SELECT ha1_md5, ha1_sha256, created_at FROM users").fetchall()
    db.close()
    assert rows == [
        (ha1("alice", DOMAIN, "two", "MD5"), ha1("alice", DOMAIN, "two", "SHA-256"), before)
    ]
    assert main(["user", "passwd", "bob", "--password", "x", "--config", str(config)]) == 1
    assert one_line(capsys.readouterr().err) == f"sipwake: no user bob@{DOMAIN}"
    assert main(["user", "passwd", "alice", "--config", str(config)]) == 2
    assert one_line(capsys.readouterr().err) == "sipwake: --password is required"


# --- a misspelled SIPWAKE_* variable ---------------------------------------------------


async def test_misspelled_environment_variable_is_logged_with_the_closest_key(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "sqlite:///s.db")
    code, out = await run_sipwake(
        "user", "list", "--config", str(config), cwd=tmp_path,
        env={"SIPWAKE_SIP_DOMIAN": "typo.example"},
    )  # fmt: skip
    assert code == 0, out
    assert (
        " WARNING sipwake.config: ignoring unknown environment variable SIPWAKE_SIP_DOMIAN "
        "(did you mean SIPWAKE_SIP_DOMAIN?)"
    ) in out


# --- where the store is ----------------------------------------------------------------


async def test_relative_sqlite_path_in_a_config_file_is_the_files(tmp_path: Path) -> None:
    """`sipwake user add --config /etc/sipwake.toml` run from another folder used to
    write a new, empty database there; the server, started elsewhere, never saw it."""
    config = write_config(tmp_path / "etc", "sqlite:///sipwake.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out = await run_sipwake(
        "user", "add", "alice", "--password", "pw", "--config", str(config), cwd=elsewhere
    )
    assert code == 0, out
    assert (tmp_path / "etc" / "sipwake.db").exists()
    assert not (elsewhere / "sipwake.db").exists()
    code, out = await run_sipwake("user", "list", "--config", "etc/sipwake.toml", cwd=tmp_path)
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("sip:")] == [
        f"sip:alice@{DOMAIN}"
    ]


# --- what an empty [sip] secret costs --------------------------------------------------


async def test_serve_warns_when_the_secret_is_random(
    start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sipwake.server"):
        await start_server(make_config(tmp_path, sip={"secret": ""}))
    (warning,) = [r.getMessage() for r in caplog.records if "secret" in r.getMessage()]
    assert "[sip] secret is empty" in warning
    assert "bearer tokens (meant to last [auth] token_ttl, 24 h)" in warning
    assert "SIPWAKE_SIP_SECRET" in warning


async def test_serve_says_nothing_of_a_secret_that_is_set(
    start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sipwake.server"):
        await start_server(make_config(tmp_path, sip={"secret": "s3cret"}))
    assert not [r for r in caplog.records if "secret" in r.getMessage()]
