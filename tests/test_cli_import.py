"""`sipwake user import FILE.csv`, `user list` and `version` as the installed console
script runs them: a file is checked whole before anything is written (bad rows by line
number, exit 2), imported a batch per transaction into SQLite or PostgreSQL, and a
second run changes nothing; a progress bar only on a terminal."""

from __future__ import annotations

import io
import os
import pty
import subprocess
from pathlib import Path

import pytest

from sipwake.progress import ProgressBar
from sipwake.provision import read_csv
from sipwake.sip.digest import ha1
from sipwake.store import open_store
from sipwake.testing import ManualScheduler
from tests.helpers.configs import write_config
from tests.helpers.node import DOMAIN
from tests.served import run_sipwake, sipwake_command


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/users.db"
    return str(request.getfixturevalue("pg_url"))


def users_csv(path: Path, count: int, password: str = "pw-{i}") -> Path:
    lines = ["username,password"] + [f"user{i},{password.format(i=i)}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


async def stored(store_url: str) -> dict[str, tuple[str, str, float]]:
    store = await open_store(store_url)
    try:
        return {u.username: (u.ha1_md5, u.ha1_sha256, u.created_at)
                for u in await store.list_users(DOMAIN)}
    finally:
        await store.close()


async def test_import_then_again_changes_nothing(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", store_url)
    csv = users_csv(tmp_path / "users.csv", 12_000)  # three batches of 5,000
    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path, timeout=120)
    assert code == 0, out
    assert f"{csv}: 12000 users for {DOMAIN}: 12000 added, 0 updated, 0 unchanged, " \
           "0 skipped in " in out
    assert "\r" not in out  # no progress bar into a pipe
    users = await stored(store_url)
    assert len(users) == 12_000
    md5, sha, created = users["user11999"]
    assert md5 == ha1("user11999", DOMAIN, "pw-11999", "MD5")
    assert sha == ha1("user11999", DOMAIN, "pw-11999", "SHA-256")
    assert created > 0

    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path, timeout=120)
    assert code == 0, out
    assert "12000 users for example.com: 0 added, 0 updated, 12000 unchanged, 0 skipped" in out
    assert await stored(store_url) == users


async def test_existing_users_are_skipped_unless_update(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", store_url)
    code, out = await run_sipwake("user", "add", "user1", "--password", "old",
                                  "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    created = (await stored(store_url))["user1"][2]
    csv = users_csv(tmp_path / "users.csv", 3)

    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path)
    assert code == 0, out
    assert "3 users for example.com: 2 added, 0 updated, 0 unchanged, 1 skipped in " in out
    assert "--update replaces it" in out
    assert (await stored(store_url))["user1"][0] == ha1("user1", DOMAIN, "old", "MD5")

    code, out = await run_sipwake("user", "import", str(csv), "--update",
                                  "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    assert "3 users for example.com: 0 added, 1 updated, 2 unchanged, 0 skipped in " in out
    md5, _, created_after = (await stored(store_url))["user1"]
    assert md5 == ha1("user1", DOMAIN, "pw-1", "MD5")
    assert created_after == created  # an update is not a new user


async def test_bad_rows_by_line_and_nothing_written(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", store_url)
    csv = tmp_path / "users.csv"
    csv.write_text(
        "username,password\n"
        "alice,one\n"
        "\n"  # blank lines are fine
        "bob smith,two\n"
        "carol,\n"
        "alice,again\n"
        "dave,x,extra\n"
        '"multi\nline",pw\n'
        "erin,five\n"
    )
    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path)
    assert code == 2
    assert out.splitlines() == [
        f"sipwake: {csv} line 4: user name 'bob smith' contains a space: a SIP user part may "
        "hold ASCII letters and digits, -_.!~*'()&=+$,;?/ and %XX escapes (RFC 3261)",
        f"sipwake: {csv} line 5: empty password",
        f"sipwake: {csv} line 6: user 'alice' is already on line 2",
        f"sipwake: {csv} line 7: 3 fields, the header names 2",
        f"sipwake: {csv} line 9: user name 'multi\\nline' contains a space: a SIP user part "
        "may hold ASCII letters and digits, -_.!~*'()&=+$,;?/ and %XX escapes (RFC 3261)",
        f"sipwake: 5 bad rows in {csv}: nothing imported (fix them, or give --skip-bad to "
        "import the other 2)",
    ]
    if store_url.startswith("sqlite"):
        assert not (tmp_path / "users.db").exists()  # the store was never opened
    else:
        assert await stored(store_url) == {}

    code, out = await run_sipwake("user", "import", str(csv), "--skip-bad",
                                  "--config", str(config), cwd=tmp_path)
    assert code == 2, out  # a script still learns that rows were left out
    assert "2 users for example.com: 2 added" in out
    assert sorted(await stored(store_url)) == ["alice", "erin"]


async def test_ha1_columns(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", store_url)
    md5, sha = ha1("zoe", DOMAIN, "s3", "MD5"), ha1("zoe", DOMAIN, "s3", "SHA-256")
    csv = tmp_path / "hashes.csv"
    csv.write_text(f"ha1_sha256,username,ha1_md5\n{sha.upper()},zoe,{md5}\n{sha},yan,12ab\n")
    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path)
    assert code == 2
    assert f"sipwake: {csv} line 3: ha1_md5 must be 32 hex digits" in out
    code, out = await run_sipwake("user", "import", str(csv), "--skip-bad",
                                  "--config", str(config), cwd=tmp_path)
    assert (await stored(store_url))["zoe"][:2] == (md5, sha)  # stored lower-case


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the file is empty: its first line must name the columns"),
        ("alice,secret\n", "line 1 names the columns 'alice,secret': expected a header line"),
        ("username,password,domain\n", "line 1 names the columns 'username,password,domain'"),
        ("username,ha1_md5\n", "expected a header line username,password or username,ha1_md5,"),
    ],
)
async def test_unusable_header_is_one_line(
    store_url: str, tmp_path: Path, text: str, why: str
) -> None:
    config = write_config(tmp_path / "etc", store_url)
    csv = tmp_path / "users.csv"
    csv.write_text(text)
    code, out = await run_sipwake("user", "import", str(csv), "--config", str(config),
                                  cwd=tmp_path)
    assert code == 2
    (line,) = out.splitlines()
    assert line.startswith(f"sipwake: {csv}: ") and why in line, line


async def test_list_is_aligned_columns(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", store_url)
    for name in ("bob", "alexander-the-great"):
        code, out = await run_sipwake("user", "add", name, "--password", "pw",
                                      "--config", str(config), cwd=tmp_path)
        assert code == 0, out
    code, out = await run_sipwake("user", "list", "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    lines = [line for line in out.splitlines() if " INFO " not in line]  # migrations
    assert lines[-1] == f"2 users in {DOMAIN}"
    header, first, second = lines[:3]
    assert header.split() == ["AOR", "CREATED", "(UTC)"]
    assert first.startswith(f"sip:alexander-the-great@{DOMAIN}  20")
    assert second.startswith(f"sip:bob@{DOMAIN}  ")
    # the second column starts at the same place on every line
    assert header.index("CREATED") == first.index("  20") + 2 == second.index("20")


# --- no store needed -------------------------------------------------------------------


@pytest.mark.parametrize("args", [("version",), ("--version",)])
async def test_version(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, out = await run_sipwake(*args, cwd=tmp_path)
    assert code == 0
    assert out.startswith("sipwake 0.1.0 (Python 3.")
    assert out.count("\n") == 2
    assert out.splitlines()[1] in (  # tests/test_parser_variant.py: which, when
        "parser: compiled (mypyc)",
        "parser: pure Python (not compiled)",
        "parser: pure Python (SIPWAKE_PURE_PYTHON)",
    )


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """Run with stderr on a pseudo-terminal: the bar is drawn in place and ends at 100 %."""
    config = write_config(tmp_path / "etc", f"sqlite:///{tmp_path}/users.db")
    csv = users_csv(tmp_path / "users.csv", 20_000)
    leader, follower = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWAKE_")}
        proc = subprocess.Popen(
            [sipwake_command(), "user", "import", str(csv), "--config", str(config)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=follower,
        )  # fmt: skip
        os.close(follower)
        err = b""
        while True:  # read as it comes: a full terminal buffer would stop the child
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            err += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
    assert proc.returncode == 0, err
    assert b"20000 added" in out
    text = err.decode()
    assert text.count("\r") >= 1
    assert "importing [" + "#" * 30 + "] 20,000/20,000 100%" in text
    assert text.endswith("\r\n")  # the terminal turns the final \n into \r\n


def test_progress_bar_redraws_at_most_every_tenth_of_a_second() -> None:

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = ManualScheduler()
    stream = Tty()
    bar = ProgressBar(stream, 100, "importing", clock=clock.time)
    bar(10)
    bar(20)  # same instant: not drawn
    clock.advance(0.5)
    bar(50)
    bar(100)  # the end is always drawn
    assert stream.getvalue().split("\r")[1:] == [
        "importing [###...........................] 10/100  10%",
        "importing [###############...............] 50/100  50% 100/s",
        "importing [##############################] 100/100 100% 200/s\n",
    ]
    silent = io.StringIO()
    ProgressBar(silent, 10)(10)
    assert silent.getvalue() == ""


def test_read_csv_takes_a_header_in_any_case() -> None:
    entries, problems = read_csv(["Username , PASSWORD\n", "ann,pw with spaces \n"], DOMAIN)
    assert problems == []
    assert [(e.line, e.username) for e in entries] == [(2, "ann")]
    assert entries[0].ha1_md5 == ha1("ann", DOMAIN, "pw with spaces ", "MD5")
