"""outages_raised: an outage leaves as StoreUnavailable (from its cause), anything else
as it is, a cancellation untouched; every failure is counted."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from sipwake.store.errors import ERRORS, StoreUnavailable, outages_raised


def test_an_outage_leaves_as_store_unavailable() -> None:
    before = ERRORS["database is locked"]
    cause = sqlite3.OperationalError("database is locked")
    with pytest.raises(StoreUnavailable) as caught, outages_raised():
        raise cause
    assert caught.value.kind == "database is locked" and caught.value.__cause__ is cause
    assert ERRORS["database is locked"] == before + 1


def test_other_errors_and_cancellation_pass_unchanged() -> None:
    before = ERRORS["error"]
    with pytest.raises(ValueError), outages_raised():
        raise ValueError("a bug")
    assert ERRORS["error"] == before + 1
    with pytest.raises(asyncio.CancelledError), outages_raised():
        raise asyncio.CancelledError
    assert ERRORS["error"] == before + 1  # a stop is not a failure
    with outages_raised():
        pass
