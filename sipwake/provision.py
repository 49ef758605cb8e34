"""Provisioning SIP users: names checked as RFC 3261 user parts, passwords kept only as
digest HA1 hashes, and CSV files imported in batches (`sipwake user import`).

A CSV file's first line names its columns, in any order:
- `username,password`: the password is hashed here (MD5 and SHA-256 HA1 over
  `username:realm:password`) and never stored;
- `username,ha1_md5,ha1_sha256`: hashes exported from another server, which must
  have used the same realm (`[sip] realm`). Both are needed: sipwake challenges
  with both algorithms, and a phone may answer either.

The whole file is read and checked before anything is written, so a bad row (its line
number and what is wrong with it) can be fixed first; each batch of rows is then one
transaction. Users already in the store are skipped, or with `update` given the file's
hashes (their creation time kept): importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sipwake.sip.digest import ha1
from sipwake.store.models import User

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_USER_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "&=+$,;?/")
_HEX = frozenset(string.hexdigits)
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

BATCH = 5000  # users per transaction: a 100k-user file is 20 commits


def check_username(name: str) -> str | None:
    """Why `name` can't be the user part of a SIP address, or None when it can."""
    if not name:
        return "a user name must not be empty"
    i = 0
    while i < len(name):
        c = name[i]
        if c in _USER_CHARS:
            i += 1
        elif c == "%" and len(name) >= i + 3 and set(name[i + 1 : i + 3]) <= _HEX:
            i += 3
        else:
            break
    else:
        return None
    if c == "@":
        return (
            f"user name {name!r} contains '@': give the user part only "
            "(the domain is [sip] domain, or --domain)"
        )
    if c == "%":
        what = "a '%' that does not start a %XX escape"
    elif c.isspace():
        what = "a space"
    elif not c.isprintable():
        what = "a control character"
    else:
        what = repr(c)
    return (
        f"user name {name!r} contains {what}: a SIP user part may hold ASCII letters and "
        "digits, -_.!~*'()&=+$,;?/ and %XX escapes (RFC 3261)"
    )


def make_user(username: str, domain: str, realm: str, password: str,
              created_at: float) -> User:
    return User(
        username=username,
        domain=domain,
        ha1_md5=ha1(username, realm, password, "MD5"),
        ha1_sha256=ha1(username, realm, password, "SHA-256"),
        created_at=created_at,
    )


# --- reading a CSV file ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One good row: a user name and its hashes."""

    line: int
    username: str
    ha1_md5: str
    ha1_sha256: str


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    why: str


COLUMN_SETS = ({"username", "password"}, {"username", "ha1_md5", "ha1_sha256"})


class CsvFormatError(ValueError):
    """The file as a whole can't be read (no header, unknown columns, not UTF-8)."""


def read_csv(lines: Iterable[str], realm: str) -> tuple[list[Entry], list[Problem]]:
    """The good rows of a users CSV (hashed for `realm` when given passwords) and what
    is wrong with each bad one. Raises CsvFormatError when the header is unusable."""
    reader = csv.reader(lines)
    try:
        header = [c.strip().lower() for c in next(reader)]
    except StopIteration:
        raise CsvFormatError("the file is empty: its first line must name the columns "
                             "(username,password or username,ha1_md5,ha1_sha256)") from None
    except csv.Error as exc:
        raise CsvFormatError(f"line 1: {exc}") from None
    if set(header) not in COLUMN_SETS or len(header) != len(set(header)):
        raise CsvFormatError(
            f"line 1 names the columns {','.join(header)!r}: expected a header line "
            "username,password or username,ha1_md5,ha1_sha256 (any order)"
        )
    index = {name: i for i, name in enumerate(header)}
    hashed = "password" not in index
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(reader.line_num, str(exc)))
            continue
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are allowed anywhere
        if len(row) != len(header):
            problems.append(Problem(line, f"{len(row)} fields, the header names {len(header)}"))
            continue
        username = row[index["username"]].strip()
        if why := check_username(username):
            problems.append(Problem(line, why))
            continue
        if username in seen:
            problems.append(Problem(line, f"user {username!r} is already on line "
                                          f"{seen[username]}"))
            continue
        if hashed:
            md5, sha = row[index["ha1_md5"]].strip(), row[index["ha1_sha256"]].strip()
            if not _MD5.fullmatch(md5):
                problems.append(Problem(line, "ha1_md5 must be 32 hex digits"))
                continue
            if not _SHA256.fullmatch(sha):
                problems.append(Problem(line, "ha1_sha256 must be 64 hex digits"))
                continue
            md5, sha = md5.lower(), sha.lower()
        else:
            password = row[index["password"]]  # as written: spaces may be part of it
            if not password:
                problems.append(Problem(line, "empty password"))
                continue
            md5 = ha1(username, realm, password, "MD5")
            sha = ha1(username, realm, password, "SHA-256")
        seen[username] = line
        entries.append(Entry(line, username, md5, sha))
    return entries, problems


# --- writing -------------------------------------------------------------------------


class UserStore(Protocol):
    """The part of the Store an import uses."""

    async def list_users(self, domain: str | None = None) -> list[User]: ...

    async def put_users(self, users: Sequence[User]) -> None: ...


@dataclass(slots=True)
class ImportCounts:
    added: int = 0
    updated: int = 0  # existing users given the file's hashes (update)
    unchanged: int = 0  # existing users whose hashes were the file's already
    skipped: int = 0  # existing users left alone (no update)

    @property
    def rows(self) -> int:
        return self.added + self.updated + self.unchanged + self.skipped


async def import_users(
    store: UserStore,
    entries: Sequence[Entry],
    domain: str,
    *,
    update: bool = False,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> ImportCounts:
    """Write `entries` as users of `domain`, `batch` users per transaction; `progress`
    hears how many rows are done after each batch."""
    existing = {u.username: u for u in await store.list_users(domain)}
    counts = ImportCounts()
    now = clock()
    pending: list[User] = []
    done = 0
    for entry in entries:
        old = existing.get(entry.username)
        if old is None:
            counts.added += 1
            pending.append(User(entry.username, domain, entry.ha1_md5, entry.ha1_sha256, now))
        elif (old.ha1_md5, old.ha1_sha256) == (entry.ha1_md5, entry.ha1_sha256):
            counts.unchanged += 1
        elif not update:
            counts.skipped += 1
        else:
            counts.updated += 1
            pending.append(User(entry.username, domain, entry.ha1_md5, entry.ha1_sha256,
                                old.created_at))
        done += 1
        if len(pending) >= batch:
            await store.put_users(pending)
            pending = []
            if progress is not None:
                progress(done)
    if pending:
        await store.put_users(pending)
    if progress is not None:
        progress(done)
    return counts
