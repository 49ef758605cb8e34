"""A store that is failing right now, as opposed to a request that is wrong.

Both backends turn the errors that mean "the database can't be reached or written at
the moment" (PostgreSQL down or restarting, a connection lost, a full disk, an I/O
error, a lock held too long) into `StoreUnavailable`. Callers answer those with 503 +
Retry-After and try again later; anything else (a constraint, a bug) stays what it is.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
from typing import Literal

import asyncpg  # type: ignore[import-untyped]

from sipwake.lograte import LogRate

# SQLite primary result codes that mean the database is out of reach for now
_SQLITE_OUTAGES = {
    5: "database is locked",  # SQLITE_BUSY
    6: "database table is locked",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "read-only database",  # SQLITE_READONLY (the file or its folder lost write access)
    10: "disk I/O error",  # SQLITE_IOERR
    13: "disk full",  # SQLITE_FULL
    14: "cannot open the database file",  # SQLITE_CANTOPEN
    15: "locking protocol",  # SQLITE_PROTOCOL
}


class StoreUnavailable(Exception):
    """The store can't serve now: the request may be tried again later (503)."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        text = str(cause)
        super().__init__(text if kind in text else f"{kind}: {text}" if text else kind)
        self.kind = kind  # one per kind of failure: what log lines are counted by


def _kind(exc: BaseException) -> str | None:
    """What kind of outage `exc` is, or None when it is not one."""
    if isinstance(exc, StoreUnavailable):
        return exc.kind
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # "database is locked" raised by our own retry loop
            return "database is locked" if "locked" in str(exc) else None
        return _SQLITE_OUTAGES.get(code & 0xFF)
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return "PostgreSQL connection lost"
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
        return "PostgreSQL not accepting connections"
    if isinstance(exc, asyncpg.OperatorInterventionError):
        return "PostgreSQL shutting down"
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return "store unreachable"
    return None


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """`exc` as a StoreUnavailable when it is an outage, else None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    kind = _kind(exc)
    return StoreUnavailable(kind, exc) if kind is not None else None


# Store operations that failed in this process, by kind of outage ("error" for any
# other failure): the sipwake_store_errors metric reads it.
ERRORS: collections.Counter[str] = collections.Counter()


class _OutagesRaised:
    """A class, not @contextmanager: every store call enters it, and a generator-based
    one costs a generator and two resumptions each time."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: object, exc: BaseException | None, tb: object
    ) -> Literal[False]:  # never swallows: raises the converted error, or lets it go on
        if not isinstance(exc, Exception):
            return False  # none, or a cancellation / exit: on its way unchanged
        converted = unavailable(exc)
        ERRORS[converted.kind if converted is not None else "error"] += 1
        if converted is None or converted is exc:
            return False
        raise converted from exc


_OUTAGES_RAISED = _OutagesRaised()


def outages_raised() -> _OutagesRaised:
    """Inside: an outage error leaves as StoreUnavailable, anything else as it is.
    Either way it is counted in ERRORS."""
    return _OUTAGES_RAISED


_OUTAGE_LOG = LogRate(60.0)


def log_failure(logger: logging.Logger, exc: BaseException, what: str, *args: object) -> None:
    """`what` (a %-format with `args`) failed with `exc`. While the store is failing,
    that is one warning a minute per kind of failure, without a traceback (the cause
    is known, and a traceback per request would bury the log); anything else is a
    bug worth its traceback."""
    outage = unavailable(exc)
    if outage is None:
        logger.error(what + " failed", *args, exc_info=exc)
        return
    skipped = _OUTAGE_LOG.due(f"{outage.kind}|{what}")
    if skipped is not None:
        more = f" ({skipped} more since the last line)" if skipped else ""
        logger.warning(what + " failed: store unavailable (%s)%s", *args, outage, more)
