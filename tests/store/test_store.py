"""The Store contract, run against SQLite and PostgreSQL alike (see conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwake.store import Binding, Device, PushAttempt, Store, User, migrations

if TYPE_CHECKING:
    from tests.helpers.stores import Backend

AOR = "sip:alice@example.com"


def binding(key: str = "k1", aor: str = AOR, **changes: Any) -> Binding:
    b = Binding(
        aor=aor,
        key=key,
        contact=f"sip:alice@192.0.2.1:5060;ob;key={key}",
        expires_at=1764180000.25,
        call_id="a84b4c76e66710",
        cseq=314159,
        q=0.7,
        received="udp:192.0.2.1:5060",
        flow="tcp-1",
        instance="urn:uuid:00000000-0000-1000-8000-000A95A0E128",
        device_id="dev-1",
        user_agent="Linphone/5.2",
        path=("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr;ob>"),
        updated_at=1764176400.5,
    )
    return dataclasses.replace(b, **changes)


def device(device_id: str = "dev-1", aor: str = AOR, **changes: Any) -> Device:
    d = Device(
        device_id=device_id,
        aor=aor,
        provider="apns",
        platform="ios",
        push_token="a1" * 32,
        voip_token="b2" * 32,
        topic="com.example.dialer",
        team_id="ABCDE12345",
        pn_param="ABCDE12345.com.example.dialer.remote&voip",
        instance="urn:uuid:1",
        sandbox=True,
        call_mode="alert",
        ringtone="ring.caf",
        locale="de-DE",
        privacy=True,
        enabled=True,
        token_updated_at=1000.0,
        created_at=900.0,
        updated_at=1000.0,
    )
    return dataclasses.replace(d, **changes)


def attempt(at: float, device_id: str = "dev-1", **changes: Any) -> PushAttempt:
    a = PushAttempt(
        device_id=device_id,
        kind="call",
        provider="apns",
        push_id=f"id-{at}",
        attempt=1,
        status=200,
        outcome="delivered",
        latency_ms=12.625,
        at=at,
    )
    return dataclasses.replace(a, **changes)


async def test_user_crud(store: Store) -> None:
    alice = User("alice", "example.com", "md5-a", "sha-a", created_at=1.5)
    bob = User("bob", "example.com", "md5-b", "sha-b")
    other = User("alice", "example.org", "md5-c", "sha-c")
    for u in (alice, bob, other):
        await store.put_user(u)

    assert await store.get_user("alice", "example.com") == alice
    assert await store.get_user("alice", "example.net") is None
    assert await store.list_users() == [alice, bob, other]
    assert await store.list_users("example.com") == [alice, bob]

    changed = dataclasses.replace(alice, ha1_md5="md5-new", ha1_sha256="sha-new")
    await store.put_user(changed)
    assert await store.get_user("alice", "example.com") == changed
    assert len(await store.list_users()) == 3

    assert await store.delete_user("alice", "example.com") is True
    assert await store.delete_user("alice", "example.com") is False
    assert await store.get_user("alice", "example.com") is None
    assert await store.list_users() == [bob, other]


async def test_put_binding_replaces_same_aor_and_key(store: Store) -> None:
    await store.put_binding(binding("k1"))
    newer = binding("k1", contact="sip:alice@198.51.100.7:5062", cseq=314160, path=(), q=1.0)
    await store.put_binding(newer)
    assert await store.bindings(AOR) == [newer]


async def test_bindings_of_one_aor(store: Store) -> None:
    mine = [binding("k1"), binding("k2", device_id="", path=())]
    theirs = binding("k1", aor="sip:bob@example.com")
    for b in [*mine, theirs]:
        await store.put_binding(b)
    assert await store.bindings(AOR) == mine
    assert await store.bindings("sip:nobody@example.com") == []
    assert await store.all_bindings() == [*mine, theirs]


async def test_delete_binding(store: Store) -> None:
    await store.put_binding(binding("k1"))
    await store.put_binding(binding("k2"))
    assert await store.delete_binding(AOR, "k1") is True
    assert await store.delete_binding(AOR, "k1") is False
    assert [b.key for b in await store.bindings(AOR)] == ["k2"]


async def test_purge_expired_bindings(store: Store) -> None:
    for key, expires in [("old", 99.5), ("edge", 100.0), ("new", 200.0)]:
        await store.put_binding(binding(key, expires_at=expires))
    assert await store.purge_expired_bindings(100.0) == 1  # expires_at < now only
    assert [b.key for b in await store.bindings(AOR)] == ["edge", "new"]
    assert await store.purge_expired_bindings(100.0) == 0


async def test_data_survives_restart(backend: Backend) -> None:
    first = await backend.open()
    await first.put_binding(binding("k1"))
    await first.put_device(device())
    await first.close()

    second = await backend.open()
    assert await second.bindings(AOR) == [binding("k1")]
    assert await second.get_device("dev-1") == device()


async def test_device_crud(store: Store) -> None:
    ios = device("dev-1")
    android = device(
        "dev-2",
        provider="fcm",
        platform="android",
        voip_token="",
        sandbox=False,
        privacy=False,
        enabled=False,
        disabled_reason="Unregistered",
    )
    elsewhere = device("dev-3", aor="sip:bob@example.com")
    for d in (ios, android, elsewhere):
        await store.put_device(d)

    got = await store.get_device("dev-1")
    assert got == ios
    assert got is not None and got.sandbox is True and got.privacy is True
    got = await store.get_device("dev-2")
    assert got == android
    assert got is not None and got.enabled is False and got.sandbox is False
    assert await store.devices(AOR) == [ios, android]
    assert await store.get_device("nope") is None

    replaced = device("dev-1", aor="sip:carol@example.com", push_token="c3" * 32, enabled=False)
    await store.put_device(replaced)
    assert await store.get_device("dev-1") == replaced
    assert await store.devices(AOR) == [android]

    assert await store.delete_device("dev-2") is True
    assert await store.delete_device("dev-2") is False
    assert await store.devices(AOR) == []


async def test_disable_device_when_token_is_not_newer(store: Store) -> None:
    await store.put_device(device("dev-1", token_updated_at=1000.0))
    # Provider's "unregistered since 999": the token was uploaded after that, keep it.
    assert await store.disable_device("dev-1", "Unregistered", 999.0) is False
    got = await store.get_device("dev-1")
    assert got is not None and got.enabled is True and got.disabled_reason == ""

    assert await store.disable_device("dev-1", "Unregistered", 1000.0) is True
    got = await store.get_device("dev-1")
    assert got is not None and got.enabled is False and got.disabled_reason == "Unregistered"
    assert got.token_updated_at == 1000.0 and got.push_token == device().push_token

    # A re-upload (put_device) enables it again and makes it immune to the old 410.
    await store.put_device(device("dev-1", token_updated_at=2000.0))
    assert await store.disable_device("dev-1", "Unregistered", 1500.0) is False
    assert await store.disable_device("missing", "Unregistered", 1e12) is False


async def test_devices_with_token_finds_either_token_of_any_user(store: Store) -> None:
    long_fcm = "f" * 100 + "1"  # the index holds a 64-character prefix: the rest decides
    await store.put_device(device("dev-1"))
    await store.put_device(device("dev-2", aor="sip:bob@example.com", push_token="", voip_token="b2" * 32))
    await store.put_device(device("dev-3", provider="fcm", push_token=long_fcm, voip_token=""))
    await store.put_device(device("dev-4", provider="fcm", push_token="f" * 100 + "2", voip_token=""))
    assert [d.device_id for d in await store.devices_with_token("b2" * 32)] == ["dev-1", "dev-2"]
    assert [d.device_id for d in await store.devices_with_token("a1" * 32)] == ["dev-1"]
    assert [d.device_id for d in await store.devices_with_token(long_fcm)] == ["dev-3"]
    assert await store.devices_with_token("c3" * 32) == []


async def test_migration_5_leaves_each_token_to_its_newest_device(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Databases from before "one token, one device": the newest upload keeps a token
    that several devices held; a device left with none is deleted."""
    full = migrations.MIGRATIONS
    monkeypatch.setattr(migrations, "MIGRATIONS", tuple(m for m in full if m.version != 5))
    old = await backend.open()
    await old.put_device(device("old", token_updated_at=100.0))  # both tokens taken later
    await old.put_device(device("alert", token_updated_at=200.0, voip_token=""))
    await old.put_device(device("voip", aor="sip:bob@example.com", token_updated_at=300.0,
                                push_token="", voip_token="b2" * 32))
    await old.put_device(device("keeps", token_updated_at=50.0, push_token="c3" * 32))
    await old.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", full)
    new = await backend.open()
    left = {d.device_id: (d.push_token, d.voip_token) for a in (AOR, "sip:bob@example.com")
            for d in await new.devices(a)}
    assert left == {
        "alert": ("a1" * 32, ""),
        "voip": ("", "b2" * 32),
        "keeps": ("c3" * 32, ""),  # its VoIP token went to the newer "voip"
    }


async def test_push_attempts_newest_first_and_limited(store: Store) -> None:
    for i in range(5):
        await store.add_push_attempt(attempt(100.0 + i, attempt=i + 1))
    await store.add_push_attempt(attempt(500.0, device_id="dev-2"))
    # same timestamp: the one recorded last comes first
    await store.add_push_attempt(attempt(104.0, outcome="invalid_token", status=410))

    got = await store.push_attempts("dev-1", limit=3)
    assert [(a.at, a.outcome) for a in got] == [
        (104.0, "invalid_token"),
        (104.0, "delivered"),
        (103.0, "delivered"),
    ]
    assert got[1] == attempt(104.0, attempt=5)
    assert len(await store.push_attempts("dev-1")) == 6
    assert await store.push_attempts("dev-2") == [attempt(500.0, device_id="dev-2")]
    assert await store.push_attempts("dev-3") == []


async def test_migrations_are_idempotent(backend: Backend) -> None:
    versions = sorted(m.version for m in migrations.MIGRATIONS)
    assert len(set(versions)) == len(versions)  # features append theirs, never reuse one
    first = await backend.open()
    await first.put_user(User("alice", "example.com", "m", "s"))
    assert await first.applied_migrations() == versions  # type: ignore[attr-defined]
    await first.close()

    second = await backend.open()
    assert await second.applied_migrations() == versions  # type: ignore[attr-defined]
    assert len(await second.list_users()) == 1


async def test_appended_migration_runs_once_on_open(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await backend.open()
    await old.put_user(User("alice", "example.com", "m", "s"))
    await old.close()

    latest = migrations.latest_version()
    extra = migrations.Migration(
        latest + 1,
        "extra table",
        ("CREATE TABLE test_extra (id {serial}, aor TEXT NOT NULL, at {float} NOT NULL)",),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, extra))
    new = await backend.open()
    assert (await new.applied_migrations())[-1] == latest + 1  # type: ignore[attr-defined]
    assert len(await new.list_users()) == 1
    await new.close()
    again = await backend.open()  # already applied: nothing to do
    assert (await again.applied_migrations())[-1] == latest + 1  # type: ignore[attr-defined]


async def test_a_migration_merged_late_with_a_lower_number_still_runs(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    latest = migrations.latest_version()
    newer = migrations.Migration(latest + 2, "newer", ("CREATE TABLE test_newer (x TEXT)",))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, newer))
    await (await backend.open()).close()
    # another feature's migration lands after, numbered below what the database has
    late = migrations.Migration(latest + 1, "late", ("CREATE TABLE test_late (x TEXT)",))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, late))
    store = await backend.open()
    applied = await store.applied_migrations()  # type: ignore[attr-defined]
    assert applied[-2:] == [latest + 1, latest + 2]


async def test_failed_migration_changes_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await backend.open()).close()
    latest = migrations.latest_version()
    broken = migrations.Migration(
        latest + 1, "broken", ("CREATE TABLE half (x TEXT)", "THIS IS NOT SQL")
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    with pytest.raises(Exception, match=r"(?i)syntax"):
        await backend.open()

    # `half` was rolled back with the rest, so creating it again works
    fixed = migrations.Migration(latest + 1, "fixed", ("CREATE TABLE half (x TEXT)",))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:-1], fixed))
    store = await backend.open()
    assert (await store.applied_migrations())[-1] == latest + 1  # type: ignore[attr-defined]
    await store.put_user(User("alice", "example.com", "m", "s"))  # still usable


async def test_concurrent_writers_all_land(store: Store) -> None:
    writes = [binding(f"k{i:03}", aor=f"sip:u{i % 50}@example.com", cseq=i) for i in range(500)]
    await asyncio.gather(*(store.put_binding(b) for b in writes))
    got = await store.all_bindings()
    assert len(got) == 500
    assert sorted((b.aor, b.key, b.cseq) for b in got) == sorted(
        (b.aor, b.key, b.cseq) for b in writes
    )


async def test_bad_write_fails_alone(store: Store) -> None:
    good = [binding(f"k{i:02}") for i in range(60)]
    bad = binding("bad", aor=None)  # type: ignore[arg-type]  # NOT NULL: the database rejects it
    calls = [store.put_binding(b) for b in good[:30]]
    calls += [store.put_binding(bad)]
    calls += [store.put_binding(b) for b in good[30:]]
    results = await asyncio.gather(*calls, return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and results[30] is errors[0]
    assert "null" in str(errors[0]).lower()
    assert await store.bindings(AOR) == good


async def test_writes_queued_before_close_are_committed(backend: Backend) -> None:
    store = await backend.open()
    writes = [asyncio.ensure_future(store.put_binding(binding(f"k{i:02}"))) for i in range(50)]
    await asyncio.sleep(0)  # all queued, none committed yet
    await store.close()
    await asyncio.gather(*writes)
    with pytest.raises(RuntimeError, match="not open"):
        await store.put_binding(binding("late"))

    again = await backend.open()
    assert len(await again.bindings(AOR)) == 50


HOSTILE = [
    'O\'Brien "the" ; DROP TABLE users; --',
    "back\\slash \\' \\\" %s %(x)s $1 ?",
    'json breakers ] } " \\u0000 ,',
    "Grüße, Ελληνικά, 中文, עברית, العربية",
    "emoji 📞👩🏽‍💻🇩🇪 and combining é",
    "line\nbreak\ttab\r\u2028\ufeff",
    "x" * 5000,
    "",
]


async def test_hostile_strings_round_trip(store: Store) -> None:
    for i, s in enumerate(HOSTILE):
        aor = f"sip:{s}@example.com"
        user = User(s, f"d{i}", s, s)
        await store.put_user(user)
        assert await store.get_user(s, f"d{i}") == user

        b = binding(s, aor=aor, contact=s, call_id=s, user_agent=s, path=(s, s[::-1]))
        await store.put_binding(b)
        assert await store.bindings(aor) == [b]

        d = device(f"dev{i}{s}", aor=aor, push_token=s, ringtone=s, locale=s)
        await store.put_device(d)
        assert await store.get_device(d.device_id) == d
        assert await store.disable_device(d.device_id, s, 1e9) is True
        got = await store.get_device(d.device_id)
        assert got is not None and got.disabled_reason == s

        a = attempt(float(i), device_id=d.device_id, reason=s, push_id=s)
        await store.add_push_attempt(a)
        assert await store.push_attempts(d.device_id) == [a]


_keys = itertools.count()
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
_float = st.floats(allow_nan=False, allow_infinity=False)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(contact=_text, path=st.lists(_text, max_size=3), expires_at=_float, q=_float)
async def test_any_binding_round_trips(
    store: Store, contact: str, path: list[str], expires_at: float, q: float
) -> None:
    b = binding(f"h{next(_keys)}", contact=contact, path=tuple(path), expires_at=expires_at,
                q=q)  # fmt: skip
    await store.put_binding(b)
    assert b in await store.bindings(AOR)
