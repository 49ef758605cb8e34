"""/metrics of a running node after a flow: every counter and gauge moved as the flow
says; the Grafana dashboard (docs/grafana-dashboard.json) asks only for metrics the
node exports."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import sipwake.metrics
from sipwake.store.errors import ERRORS, StoreUnavailable, outages_raised
from tests.helpers.agent import Dialer, next_request, respond
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id
from tests.helpers.wait import wait_for

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
FCM = ";pn-provider=fcm;pn-prid=dK3x:APA91bH-token_1;pn-param=my-project"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(r: Running) -> tuple[str, Samples]:
    assert r.server.http is not None
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{r.server.http.port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_the_metrics_follow_a_flow(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sipwake.metrics, "DEVICE_COUNT_TTL", 0.0)  # every scrape reads
    r = await start_server(calls={"park_timeout": 10})
    await r.add_user("alice")
    await r.add_user("bob")
    _, before = await scrape(r)
    assert value(before, "sipwake_bindings") == 0
    assert value(before, "sipwake_connections", transport="tcp") == 0

    # alice's Android phone registers over TCP and logs out: its device stays
    alice = await r.phone("alice", transport="tcp")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await alice.register(params=FCM, header_params=inst)).status == 200
    assert (await alice.register(params=FCM, header_params=inst, expires=0)).status == 200
    bob = await r.phone("bob")
    assert (await bob.register()).status == 200
    assert (await (await r.phone("bob", "wrong")).register()).status == 403

    # bob calls the sleeping alice: parked, pushed; and writes to her
    call = Dialer(bob, f"sip:alice@{DOMAIN}")
    await call.start_authenticated()
    await call.provisional(180)
    text = await bob.request("MESSAGE", f"sip:alice@{DOMAIN}", {"Content-Type": "text/plain"},
                             b"are you there?")  # fmt: skip
    assert text.status == 202
    _, ringing = await scrape(r)
    assert value(ringing, "sipwake_calls_parked") == 1
    assert value(ringing, "sipwake_calls_ringing") == 1
    call.cancel()
    assert (await call.final()).status == 487

    # she wakes: the message is delivered
    assert (await alice.register(params=FCM, header_params=inst)).status == 200
    respond(alice, await next_request(alice, "MESSAGE"), 200)
    await wait_for(lambda: r.server.inbox.courier.deliveries == 1)

    _, after = await scrape(r)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sipwake_registrations_total", result="ok") == 4
    assert moved("sipwake_registrations_total", result="challenged") == 5
    assert moved("sipwake_registrations_total", result="forbidden") == 1
    assert moved("sipwake_binding_changes_total", change="new") == 3
    assert moved("sipwake_binding_changes_total", change="unregistered") == 1
    assert value(after, "sipwake_bindings") == 2  # alice over TCP, bob over UDP
    assert value(after, "sipwake_connections", transport="tcp") == 1
    assert value(after, "sipwake_devices", platform="android", state="enabled") == 1
    assert value(after, "sipwake_calls_parked") == 0
    assert value(after, "sipwake_calls_ringing") == 0
    for kind in ("call", "message", "missed_call"):
        assert moved("sipwake_push_attempts_total", provider="sink", kind=kind,
                     outcome="delivered") == 1, kind  # fmt: skip
    assert moved("sipwake_messages_stored_total") == 1
    assert moved("sipwake_messages_delivered_total") == 1
    assert moved("sipwake_auth_failures_total") == 1


def test_store_errors_are_counted_by_kind() -> None:
    locked, other = ERRORS["database is locked"], ERRORS["error"]
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailable), outages_raised():
        raise busy
    with pytest.raises(KeyError), outages_raised():
        raise KeyError("a bug")
    assert ERRORS["database is locked"] == locked + 1 and ERRORS["error"] == other + 1


def dashboard_metrics() -> set[str]:
    """Metric names in the dashboard's queries (PromQL: names start sipwake_)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\bsipwake_\w+", expr)}


async def test_the_dashboard_asks_for_metrics_the_node_exports(start_server: ServerFactory) -> None:
    r = await start_server()
    text, _ = await scrape(r)
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        # what a query can name: counters as _total, histograms as _bucket/_sum/_count
        exported |= {s.name for s in family.samples}
        if family.type == "counter":
            exported.add(family.name + "_total")
        if family.type == "histogram":
            exported |= {family.name + x for x in ("_bucket", "_sum", "_count")}
    asked = dashboard_metrics()
    assert asked - exported == set(), "the dashboard asks for metrics /metrics lacks"
    # and every family the node exports has a panel (_created: the counters' start times)
    families = {f.name for f in text_string_to_metric_families(text)}
    exported_families = {n for n in families if not n.endswith("_created")}
    assert exported_families <= {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in asked}
    # and README's table names each
    readme = (DASHBOARD.parent.parent / "README.md").read_text()
    documented = {re.sub(r"_total$", "", n) for n in re.findall(r"`(sipwake_\w+)`", readme)}
    assert exported_families <= documented
