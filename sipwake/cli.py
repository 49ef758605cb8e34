"""`sipwake serve`, `sipwake user …`, `sipwake push test`, `sipwake version`,
`sipwake demo`.

A mistake an operator can fix (a bad configuration, a store that can't be opened, an
invalid user name) is reported as one line on stderr, "sipwake: …", with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from importlib import metadata
from typing import Any

from sipwake import logsetup, sip
from sipwake.config import Config, ConfigError, load_config
from sipwake.progress import ProgressBar
from sipwake.provision import CsvFormatError, Entry, import_users, make_user, read_csv
from sipwake.provision import check_username as check_username
from sipwake.push.notification import CallNotification, Notification, TestNotification
from sipwake.push.probe import Probe, probe
from sipwake.push_setup import build_providers
from sipwake.store import Store, StoreOpenError, open_store
from sipwake.store.models import Device

LOG_FORMAT = logsetup.TEXT_FORMAT
SHOWN_PROBLEMS = 50  # bad CSV rows listed one by one; the rest are counted


def version_line() -> str:
    """`sipwake 0.1.0 (Python 3.11.7, uvloop 0.23.0)` and on a second line
    `parser: compiled (mypyc)`: what runs, for a bug report."""
    try:
        ours = metadata.version("sipwake")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        ours = "unknown"
    try:
        loop = f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        loop = "asyncio"
    return f"sipwake {ours} (Python {platform.python_version()}, {loop})\nparser: {sip.parser()}"


def run(coro: Coroutine[Any, Any, int], loop: str = "auto") -> int:
    """Run on uvloop when it is installed (about 1.5x the SIP throughput), unless the
    default asyncio loop is asked for; both are supported and tested."""
    if loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


async def demo(stay: bool) -> int:
    from sipwake.demo.story import run_demo
    from sipwake.server import Server

    return await run_demo(Server, stay=stay)


async def serve(config: Config, worker: int | None = None) -> int:
    from sipwake.server import Server

    server = Server(config, worker)
    try:
        await server.start()
    except StoreOpenError as exc:
        print(f"sipwake: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, OSError, ValueError) as exc:  # bad key file, port in use, ...
        print(f"sipwake: cannot start: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietHandler())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await server.run_until_stopped()
    return 0


class QuietHandler:
    """The loop's own error reports (an accept() out of descriptors, a transport that
    failed) once per kind every few seconds, with a count, instead of a log that grows
    by megabytes a second while something keeps failing."""

    EVERY = 10.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        kind = str(context.get("message", ""))[:80]
        now = time.monotonic()
        at, skipped = self._last.get(kind, (-self.EVERY, 0))
        if now - at < self.EVERY:
            self._last[kind] = (at, skipped + 1)
            return
        if len(self._last) > 1000:
            self._last.clear()
        self._last[kind] = (now, 0)
        if skipped:
            context = {**context, "message": f"{kind} (and {skipped} more like it)"}
        loop.default_exception_handler(context)


async def _open(config: Config) -> Store | None:
    try:
        return await open_store(config.store.url)
    except (StoreOpenError, ValueError) as exc:  # ValueError: a malformed URL
        print(f"sipwake: {exc}", file=sys.stderr)
        return None


async def user_command(config: Config, args: argparse.Namespace) -> int:
    domain = args.domain or config.sip.domain
    if args.action in ("add", "passwd"):
        # checked before the store is opened: a bad command leaves nothing behind
        if args.action == "add" and (why := check_username(args.username)):
            print(f"sipwake: {why}", file=sys.stderr)
            return 2
        if not args.password:
            print("sipwake: --password is required", file=sys.stderr)
            return 2
    store = await _open(config)
    if store is None:
        return 2
    try:
        realm = config.sip.realm
        if args.action == "add":
            user = make_user(args.username, domain, realm, args.password, time.time())
            await store.put_user(user)
            print(f"user {user.aor} saved")
        elif args.action == "passwd":
            old = await store.get_user(args.username, domain)
            if old is None:
                print(f"sipwake: no user {args.username}@{domain}", file=sys.stderr)
                return 1
            await store.put_user(
                make_user(old.username, domain, realm, args.password, old.created_at)
            )
            print(f"password of {old.aor} changed")
        elif args.action == "del":
            # not checked as a name: a malformed user stored by an older version can go
            if not await store.delete_user(args.username, domain):
                print(f"sipwake: no user {args.username}@{domain}", file=sys.stderr)
                return 1
            print(f"user {args.username}@{domain} deleted")
        else:
            users = await store.list_users(domain)
            rows = [["AOR", "CREATED (UTC)"]]
            rows += [[u.aor, _when(u.created_at)] for u in users]
            print(table(rows))
            print(f"{len(users)} user{'' if len(users) == 1 else 's'} in {domain}",
                  file=sys.stderr)
        return 0
    finally:
        await store.close()


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart (the last column unpadded)."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def import_command(config: Config, args: argparse.Namespace) -> int:
    """`sipwake user import FILE.csv` (provision.py says what the file holds): the file
    is read and checked before the store is opened."""
    name = args.file
    try:
        with open(name, encoding="utf-8-sig", newline="") as f:
            entries, problems = read_csv(f, config.sip.realm)
    except OSError as exc:
        print(f"sipwake: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"sipwake: {name} is not UTF-8 text ({exc.reason} at byte {exc.start})",
              file=sys.stderr)
        return 2
    except CsvFormatError as exc:
        print(f"sipwake: {name}: {exc}", file=sys.stderr)
        return 2
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"sipwake: {name} line {problem.line}: {problem.why}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"sipwake: … and {len(problems) - SHOWN_PROBLEMS} more bad rows", file=sys.stderr)
    if problems and not args.skip_bad:
        print(f"sipwake: {len(problems)} bad row{'s' if len(problems) > 1 else ''} in {name}: "
              f"nothing imported (fix them, or give --skip-bad to import the other "
              f"{len(entries)})", file=sys.stderr)
        return 2
    code = run(_import(config, args, entries))
    return 2 if problems else code


async def _import(config: Config, args: argparse.Namespace, entries: list[Entry]) -> int:
    domain = args.domain or config.sip.domain
    store = await _open(config)
    if store is None:
        return 2
    started = time.perf_counter()
    bar = ProgressBar(sys.stderr, len(entries), "importing")
    try:
        counts = await import_users(store, entries, domain, update=args.update, progress=bar)
    except Exception as exc:  # an outage midway: what was committed stays
        print(f"sipwake: import stopped: {exc} (run it again: users already imported are "
              "skipped)", file=sys.stderr)
        return 2
    finally:
        await store.close()
    took = time.perf_counter() - started
    parts = [f"{counts.added} added", f"{counts.updated} updated",
             f"{counts.unchanged} unchanged", f"{counts.skipped} skipped"]
    line = f"{args.file}: {counts.rows} users for {domain}: {', '.join(parts)} in {took:.1f} s"
    if counts.skipped:
        line += " (skipped: already there with another password; --update replaces it)"
    print(line)
    return 0


# --- sipwake push test -------------------------------------------------------------------

# What a refusal usually means, for the answers app developers meet first.
HINTS = {
    "BadDeviceToken": "a development (sandbox) token sent to production or the reverse: "
                      "check the device's sandbox flag (a pn-param bundle ending .dev)",
    "DeviceTokenNotForTopic": "the token belongs to another app: check the device's topic "
                              "and [push.apns] topic (the bundle id)",
    "TopicDisallowed": "the APNs key's team may not push to this bundle id",
    "Unregistered": "the app was removed, or its token changed: the app must upload the new one",
    "InvalidProviderToken": "[push.apns] team_id / key_id / key_file do not match",
    "UNREGISTERED": "the app was removed, or its token changed: the app must upload the new one",
    "SENDER_ID_MISMATCH": "the token belongs to another Firebase project than [push.fcm] "
                          "project_id",
    "THIRD_PARTY_AUTH_ERROR": "FCM could not reach APNs for an iOS app: upload the APNs key "
                              "in the Firebase console",
}


async def push_test_command(config: Config, args: argparse.Namespace) -> int:
    """`sipwake push test USER`: a test push to each device of USER, each answer printed."""
    domain = args.domain or config.sip.domain
    aor = f"sip:{args.username}@{domain}"
    try:
        providers = build_providers(config.push)
    except ConfigError as exc:
        print(f"sipwake: {exc}", file=sys.stderr)
        return 2
    if not providers:
        print("sipwake: no push provider is configured ([push.apns] or [push.fcm] "
              "credentials): the server shows its pushes at GET /v1/dev/pushes instead",
              file=sys.stderr)
        return 2
    store = await _open(config)
    if store is None:
        return 2
    try:
        devices = await store.devices(aor)
        if not devices:
            print(f"sipwake: {aor} has no push devices (its app uploads a token in REGISTER "
                  "or with PUT /v1/devices/ID)", file=sys.stderr)
            return 1
        print(f"test push to {len(devices)} device{'s' if len(devices) > 1 else ''} of {aor}")
        now = int(time.time())
        results = await probe(devices, providers, lambda d: _test_push(args.call, d, now, domain),
                              store, per_device=args.timeout)
    finally:
        for provider in providers.values():
            await provider.close()
        await store.close()
    print(table(_probe_rows(results)))
    for r in results:
        if hint := HINTS.get(r.reason):
            print(f"{r.device.device_id}: {r.reason}: {hint}")
        if not r.device.enabled:
            print(f"{r.device.device_id}: disabled since its token was refused "
                  f"({r.device.disabled_reason}): the server sends it nothing until its app "
                  "uploads a token again")
    delivered = sum(r.delivered for r in results)
    print(f"{delivered} of {len(results)} accepted by the provider")
    return 0 if delivered else 1


def _test_push(call: bool, device: Device, now: int, domain: str) -> Notification:
    if not call:
        return TestNotification(sent_at=now)
    # what a real call push holds; its pickup finds no call (481), as after a hang-up
    return CallNotification(
        call_id=f"test-{now}", caller_uri=f"sip:push-test@{domain}", caller_number="push-test",
        caller_name="sipwake push test", pickup_uri=f"sip:pickup-test-{now}@{domain}",
        expires_at=now + 30,
    )


def _probe_rows(results: list[Probe]) -> list[list[str]]:
    rows = [["DEVICE", "PLATFORM", "PROVIDER", "TYPE", "TOKEN", "ANSWER", "MS", "ID"]]
    for r in results:
        answer = " ".join(x for x in (str(r.status) if r.status else "", r.outcome, r.reason)
                          if x)
        sandbox = " sandbox" if r.device.sandbox and r.provider == "apns" else ""
        rows.append([
            r.device.device_id, r.device.platform, (r.provider or "-") + sandbox,
            r.push_type or "-", r.token or "-", answer,
            f"{r.latency_ms:.1f}" if r.status or r.latency_ms else "-",
            r.answer_id or r.push_id or "-",
        ])  # fmt: skip
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipwake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--config", help="TOML file (defaults are embedded)")
    p_serve.add_argument(
        "--loop", choices=["auto", "asyncio"], default="auto",
        help="event loop (auto: uvloop when installed)",
    )  # fmt: skip
    p_serve.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="worker processes on the same listeners (a cluster on one machine: needs "
        "[cluster] redis_url, PostgreSQL and [sip] secret)",
    )  # fmt: skip
    p_serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by --workers
    p_demo = sub.add_parser("demo", help="the whole story on this machine, with simulated iOS "
                            "and Android apps and local APNs/FCM stand-ins (exit 0: every "
                            "step worked)")
    p_demo.add_argument("--stay", action="store_true",
                        help="then keep the node running, to look at its admin page")
    sub.add_parser("version", help="print the version")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--domain", help="defaults to [sip] domain")
    common.add_argument("--config", help="TOML file: its store, realm and push credentials")
    p_user = sub.add_parser("user", help="provision SIP users")
    users = p_user.add_subparsers(dest="action", required=True)
    for action, what in (("add", "add a user"), ("passwd", "change a password")):
        p = users.add_parser(action, parents=[common], help=what)
        p.add_argument("username", metavar="USER")
        p.add_argument("--password", help="stored only as digest HA1 hashes")
    p = users.add_parser("del", parents=[common], help="delete a user")
    p.add_argument("username", metavar="USER")
    users.add_parser("list", parents=[common], help="list the users of the domain")
    p = users.add_parser(
        "import", parents=[common], help="add users from a CSV file",
        description="The first line names the columns: username,password or "
                    "username,ha1_md5,ha1_sha256 (hashes made with [sip] realm). The file is "
                    "checked before anything is written; bad rows are listed with their line "
                    "numbers (exit status 2).",
    )  # fmt: skip
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--update", action="store_true",
                   help="give users already there the file's password (default: skip them)")
    p.add_argument("--skip-bad", action="store_true",
                   help="import the good rows even when some are bad (still exit status 2)")

    p_push = sub.add_parser("push", help="push tools")
    pushes = p_push.add_subparsers(dest="action", required=True)
    p = pushes.add_parser(
        "test", parents=[common], help="send a test push to each device of USER",
        description="Sends a test push to each push device of USER through the configured "
                    "APNs/FCM credentials and prints each provider's answer. Exit status 0 when "
                    "at least one was accepted.",
    )  # fmt: skip
    p.add_argument("username", metavar="USER")
    p.add_argument("--call", action="store_true",
                   help="send a `call` push (PushKit on iOS VoIP devices: the app must report "
                        "it to CallKit) instead of a `test` alert")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per device")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version or args.command == "version":
        print(version_line())
        return 0
    if args.command is None:
        parser.error("a command is required (serve, user, push, version, demo)")
    if args.command == "demo":  # its own configuration: the embedded defaults, in a temp dir
        return run(demo(args.stay))

    # before the configuration is read, so its warnings (an unknown SIPWAKE_*
    # variable) come out in the log's format; the level is the configuration's
    logging.basicConfig(format=LOG_FORMAT)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sipwake: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(config.log.level, config.log.format, config.log.sip_trace)
    if args.command == "serve":
        if args.workers > 1 and args.worker is None:
            if not config.cluster.redis_url:
                print("sipwake: --workers needs a cluster configuration: [cluster] redis_url, "
                      "a PostgreSQL [store] url and [sip] secret (the workers share state "
                      "as the nodes of a cluster do)", file=sys.stderr)  # fmt: skip
                return 2
            from sipwake.workers import supervise

            return supervise(config, args.config, args.loop, args.workers)
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        return run(serve(config, args.worker), args.loop)
    if args.command == "push":
        return run(push_test_command(config, args))
    if args.action == "import":
        return import_command(config, args)
    return run(user_command(config, args))


if __name__ == "__main__":
    sys.exit(main())
