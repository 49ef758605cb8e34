"""`sipwake serve` and `sipwake user …`.

A mistake an operator can fix (a bad configuration, a store that can't be opened, an
invalid user name) is reported as one line on stderr, "sipwake: …", with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import string
import sys
import time
from collections.abc import Coroutine
from typing import Any

from sipwake import logsetup
from sipwake.config import Config, ConfigError, load_config
from sipwake.sip.digest import ha1
from sipwake.store import StoreOpenError, open_store
from sipwake.store.models import User

LOG_FORMAT = logsetup.TEXT_FORMAT

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_USER_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "&=+$,;?/")
_HEX = frozenset(string.hexdigits)


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


def _user(username: str, domain: str, realm: str, password: str, created_at: float) -> User:
    return User(
        username=username,
        domain=domain,
        ha1_md5=ha1(username, realm, password, "MD5"),
        ha1_sha256=ha1(username, realm, password, "SHA-256"),
        created_at=created_at,
    )


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
    try:
        store = await open_store(config.store.url)
    except (StoreOpenError, ValueError) as exc:  # ValueError: a malformed URL
        print(f"sipwake: {exc}", file=sys.stderr)
        return 2
    try:
        realm = config.sip.realm
        if args.action == "add":
            user = _user(args.username, domain, realm, args.password, time.time())
            await store.put_user(user)
            print(f"user {user.aor} saved")
        elif args.action == "passwd":
            old = await store.get_user(args.username, domain)
            if old is None:
                print(f"sipwake: no user {args.username}@{domain}", file=sys.stderr)
                return 1
            await store.put_user(_user(old.username, domain, realm, args.password, old.created_at))
            print(f"password of {old.aor} changed")
        elif args.action == "del":
            # not checked as a name: a malformed user stored by an older version can go
            if not await store.delete_user(args.username, domain):
                print(f"sipwake: no user {args.username}@{domain}", file=sys.stderr)
                return 1
            print(f"user {args.username}@{domain} deleted")
        else:
            for u in await store.list_users(domain):
                print(u.aor)
        return 0
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipwake", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
    p_user = sub.add_parser("user", help="provision SIP users")
    p_user.add_argument("action", choices=["add", "passwd", "del", "list"])
    p_user.add_argument("username", nargs="?", default="")
    p_user.add_argument("--password", help="stored only as digest HA1 hashes")
    p_user.add_argument("--domain", help="defaults to [sip] domain")
    p_user.add_argument("--config")
    args = parser.parse_args(argv)
    if args.command == "user" and args.action != "list" and not args.username:
        parser.error("USER is required")

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
    return run(user_command(config, args))


if __name__ == "__main__":
    sys.exit(main())
