"""Configuration: one TOML file, every key overridable by `SIPWAKE_<SECTION>_<KEY>`.

The dataclasses below are the schema: their defaults are the embedded
configuration `sipwake serve` runs on without a file, and their type hints are
what file values and environment values are checked and converted against.
Unknown keys are errors so a typo never silently falls back to a default; an
unknown `SIPWAKE_*` variable is a warning (the environment holds other programs'
variables too), and both name the closest valid key.

A relative SQLite path (`sqlite:///relative.db`) in a config file is relative to
that file's folder, so every command given `--config FILE` finds the same
database wherever it runs; from the embedded default or an environment variable it
is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

log = logging.getLogger("sipwake.config")

ENV_PREFIX = "SIPWAKE_"
# sipwake's variables that are not configuration keys: read where they act, not here
NOT_KEYS = frozenset({"SIPWAKE_PURE_PYTHON"})  # sipwake/sip: run the pure-Python parser
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
DIGEST_ALGORITHMS = ("MD5", "SHA-256")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A configuration problem, worded for the operator (names the key at fault)."""


# --- schema ------------------------------------------------------------------


@dataclass
class SipConfig:
    domain: str = "localhost"
    realm: str = ""  # digest realm; empty means the domain (resolved by load_config)
    listen: list[str] = field(default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"])
    t1: float = 0.5  # RFC 3261 timers, seconds
    t2: float = 4.0
    t4: float = 5.0
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    trusted_peers: list[str] = field(default_factory=list)  # IPs or CIDRs: trunks, VM servers
    digest_algorithms: list[str] = field(default_factory=lambda: list(DIGEST_ALGORITHMS))
    nonce_ttl: float = 300.0
    # Nonce HMAC secret. Empty: the server picks a random one per process, which
    # is fine for one node but makes nonces from one cluster node fail on another.
    secret: str = ""
    # The host put in our Via, Record-Route and Contact instead of a listener's bind
    # address: needed when listening on 0.0.0.0 / [::] or behind a 1:1 NAT.
    advertise: str = ""
    tls_cert: str = ""  # PEM paths for tls: and wss: listeners
    tls_key: str = ""
    max_message_size: int = 65536
    # What one source may take (sip/guard.py): SIP messages per second per address
    # (trusted peers exempt; 0: no limit), stream connections, and their time limits.
    source_rate: float = 200.0
    source_burst: int = 400
    max_connections: int = 10_000
    max_connections_per_address: int = 100
    message_timeout: float = 30.0
    idle_timeout: float = 120.0


@dataclass
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    api_token: str = ""  # bearer token for the voicemail webhook and admin endpoints
    tls_cert: str = ""  # PEM files: the API is served over HTTPS when set
    tls_key: str = ""


@dataclass
class StoreConfig:
    url: str = "sqlite:///sipwake.db"


@dataclass
class ClusterConfig:
    redis_url: str = ""  # empty: single node


@dataclass
class ApnsConfig:
    team_id: str = ""
    key_id: str = ""
    key_file: str = ""  # .p8 signing key
    topic: str = ""  # bundle id
    url: str = "https://api.push.apple.com"
    sandbox_url: str = "https://api.sandbox.push.apple.com"
    ca_file: str = ""  # extra CA on top of the system trust store
    allow_insecure: bool = False  # allow http:// URLs, for local test servers only


@dataclass
class FcmConfig:
    project_id: str = ""
    service_account_file: str = ""
    url: str = "https://fcm.googleapis.com"
    token_url: str = ""  # when set, wins over the service account's token_uri
    ca_file: str = ""
    allow_insecure: bool = False


@dataclass
class PushConfig:
    apns: ApnsConfig = field(default_factory=ApnsConfig)
    fcm: FcmConfig = field(default_factory=FcmConfig)
    log_retention_days: int = 7  # push attempts older than this are purged; 0: kept


@dataclass
class CallsConfig:
    park_timeout: float = 30.0
    alert_repeat: float = 15.0  # 0: the alert is sent once
    max_parked_per_user: int = 10
    max_parked_total: int = 10000
    # Calls that push (token buckets, per minute): from one source to one user, and to
    # one user from everyone. Over it: 480 and no push. 0: no limit.
    source_rate: float = 3.0
    source_burst: int = 5
    callee_rate: float = 20.0
    callee_burst: int = 30
    log_retention_days: int = 90  # call log rows older than this are purged; 0: kept


@dataclass
class MessagesConfig:
    max_body: int = 65536
    retention_days: int = 30  # 0: keep messages until the cap trims them
    inbox_cap: int = 10000  # stored messages per user; 0: no cap
    sender_rate: float = 10.0  # MESSAGEs per second per sender (token bucket); 0: no limit
    sender_burst: int = 50
    forward_timeout: float = 4.0  # seconds to wait for a live device's 2xx before 202 + push


@dataclass
class VoicemailConfig:
    notifiers: list[str] = field(default_factory=list)  # users allowed to send MWI NOTIFY


@dataclass
class AuthConfig:
    # Failed SIP digest / HTTP Basic checks per source address: more than max_failures
    # within failure_window seconds → refused for block_time seconds. 0: no throttle.
    max_failures: int = 20
    failure_window: float = 60.0
    block_time: float = 60.0
    token_ttl: int = 86400  # seconds an HTTP bearer token (POST /v1/tokens) is valid


@dataclass
class LogConfig:
    level: str = "INFO"
    format: str = "text"  # "json": one JSON object a line, for log shippers
    # every SIP message in and out on the logger sipwake.sip.trace (credentials and
    # push tokens redacted, bodies as their length): for debugging one phone, not for
    # a busy node
    sip_trace: bool = False


@dataclass
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    push: PushConfig = field(default_factory=PushConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    voicemail: VoicemailConfig = field(default_factory=VoicemailConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --- listen addresses ----------------------------------------------------------


class ListenSpec(NamedTuple):
    transport: str  # one of TRANSPORTS
    host: str  # IPv6 without brackets
    port: int


def parse_host_port(spec: str, what: str = "address") -> tuple[str, int]:
    """`"127.0.0.1:8080"`, `"[::1]:8080"` or `"example.com:8080"` → (host, port)."""
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0 or spec[close + 1 : close + 2] != ":":
            raise ConfigError(f"{what} {spec!r}: expected [ipv6]:port")
        host, port_text = spec[1:close], spec[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{what} {spec!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = spec.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(f"{what} {spec!r}: expected host:port (IPv6 in brackets)")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"{what} {spec!r}: missing or bad host")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what} {spec!r}: port must be 0-65535")
    return host, int(port_text)


def _check_advertise(text: str) -> None:
    """A host name, IPv4 or IPv6 address (brackets optional); a port is the listener's."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    with_port = host.count(":") == 1  # "host:port"; an IPv6 address has two or more
    if not host or with_port or any(c in host for c in " \t/;<>@[]"):
        raise ConfigError(f"'sip.advertise' {text!r}: give a host name or address, no port")


def parse_listen(spec: str) -> ListenSpec:
    """`"udp:127.0.0.1:5060"`, `"tcp:[::1]:5060"`, `"tls:0.0.0.0:5061"`, `"ws:…"`, `"wss:…"`."""
    transport, sep, rest = spec.partition(":")
    transport = transport.lower()
    if not sep or transport not in TRANSPORTS:
        raise ConfigError(
            f"listen {spec!r}: expected transport:host:port with transport one of "
            + ", ".join(TRANSPORTS)
        )
    host, port = parse_host_port(rest, f"listen {spec!r}:")
    return ListenSpec(transport, host, port)


# --- loading -----------------------------------------------------------------


def load_config(path: str | None, env: Mapping[str, str] = os.environ) -> Config:
    """Defaults, then the TOML file at `path` (if any), then `SIPWAKE_*` variables."""
    config = Config()
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        _apply_table(config, data, "")
        if "url" in data.get("store", {}):  # the file's own URL, not the default
            folder = os.path.dirname(os.path.abspath(path))
            config.store.url = _relative_to(config.store.url, folder)
    _apply_env(config, env)
    _finish(config)
    return config


def _relative_to(url: str, folder: str) -> str:
    """A relative `sqlite:///x.db` made absolute against `folder`; other URLs as given."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/") or rest.startswith("//"):
        return url
    if rest == "/":
        return url  # malformed: left for the store to refuse
    return f"sqlite:///{quote(folder)}/{rest[1:]}"


def _did_you_mean(name: str, known: Iterable[str], spell: str = "{}") -> str:
    """ " (did you mean X?)" for the known name most like `name` (X written as `spell`
    says), or "" when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.7)
    return f" (did you mean {spell.format(match[0])}?)" if match else ""


def _fields(section: object) -> dict[str, Any]:
    """Field name → resolved type of a schema dataclass."""
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}  # type: ignore[arg-type]


def _apply_table(section: object, table: Mapping[str, Any], prefix: str) -> None:
    fields = _fields(section)
    for key, value in table.items():
        name = f"{prefix}{key}"
        if key not in fields:
            like = [f"{prefix}{k}" for k in fields]
            if isinstance(value, dict):
                hint = _did_you_mean(name, like, "[{}]")
                raise ConfigError(f"unknown section [{name}]{hint}")
            hint = _did_you_mean(name, like, "'{}'")
            raise ConfigError(f"unknown key {name!r}{hint}")
        target = fields[key]
        if dataclasses.is_dataclass(target):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} must be a table [{name}]")
            _apply_table(getattr(section, key), value, f"{name}.")
        else:
            setattr(section, key, _check(name, value, target))


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a list of strings"


def _check(name: str, value: Any, tp: Any) -> Any:
    """A TOML value checked against the field type (ints are accepted as floats)."""
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    else:  # pragma: no cover - the schema above uses only these types
        raise AssertionError(f"unsupported field type {tp!r} for {name}")
    if not ok:
        raise ConfigError(f"{name!r} must be {_type_name(tp)}, got {type(value).__name__}")
    if tp is float and not math.isfinite(value):  # TOML has inf and nan
        raise ConfigError(f"{name!r} must be a finite number, got {value}")
    return value


def _env_keys(section: object, path: str) -> dict[str, tuple[object, str, Any]]:
    """Every leaf key's variable name → (section object, field name, type)."""
    out: dict[str, tuple[object, str, Any]] = {}
    for name, tp in _fields(section).items():
        var = f"{path}_{name}".upper() if path else name.upper()
        if dataclasses.is_dataclass(tp):
            out.update(_env_keys(getattr(section, name), var))
        else:
            out[var] = (section, name, tp)
    return out


def _apply_env(config: Config, env: Mapping[str, str]) -> None:
    # Matching whole variable names against the schema's own list resolves the
    # ambiguity of "_" (PUSH_APNS_TEAM_ID is push.apns + team_id, not push + apns_team_id).
    known = _env_keys(config, "")
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var in NOT_KEYS:
            continue
        entry = known.get(var[len(ENV_PREFIX) :])
        if entry is None:
            # compared without the common prefix, which would make every name look alike
            hint = _did_you_mean(var[len(ENV_PREFIX) :], known, ENV_PREFIX + "{}")
            log.warning("ignoring unknown environment variable %s%s", var, hint)
            continue
        section, name, tp = entry
        setattr(section, name, _from_env(var, text, tp))


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _from_env(var: str, text: str, tp: Any) -> Any:
    """An environment string converted to the field type."""
    raw = text.strip()
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{var}={text!r}: expected true/false/1/0/yes/no")
    if tp is int or tp is float:
        try:
            number = tp(raw)
        except ValueError:
            raise ConfigError(f"{var}={text!r}: expected {_type_name(tp)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{var}={text!r}: expected a finite number")
        return number
    if tp is str:
        return text  # as given: a secret or token may legitimately carry spaces
    # A list: a TOML array literal, or comma-separated words.
    if raw.startswith("["):
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{var}: invalid TOML array: {exc}") from None
        return _check(var, value, tp)
    return [item.strip() for item in raw.split(",") if item.strip()]


# Numeric keys' lower bounds: key → (bound, whether the bound itself is allowed).
# A 0 that the code reads as "off" is allowed and documented; one that would
# stop the feature working (no time to ring, no room to park) is not.
_LOWEST: dict[str, tuple[float, bool]] = {
    "sip.t1": (0, False),
    "sip.t2": (0, False),
    "sip.t4": (0, False),
    "sip.nonce_ttl": (0, False),
    "sip.min_expires": (0, False),
    "sip.max_message_size": (0, False),
    "sip.source_rate": (0, True),  # 0: no limit
    "sip.source_burst": (1, True),
    "sip.max_connections": (1, True),
    "sip.max_connections_per_address": (1, True),
    "sip.message_timeout": (0, False),
    "sip.idle_timeout": (0, False),
    "calls.park_timeout": (0, False),
    "calls.alert_repeat": (0, True),  # 0: the alert is sent once
    "calls.max_parked_per_user": (1, True),
    "calls.max_parked_total": (1, True),
    "messages.max_body": (0, False),
    "messages.retention_days": (0, True),  # 0: no purge by age
    "messages.inbox_cap": (0, True),  # 0: no cap
    "messages.sender_rate": (0, True),  # 0: no limit
    "messages.sender_burst": (1, True),
    "messages.forward_timeout": (0, False),
    "calls.source_rate": (0, True),  # 0: no limit
    "calls.source_burst": (1, True),
    "calls.callee_rate": (0, True),  # 0: no limit
    "calls.callee_burst": (1, True),
    "calls.log_retention_days": (0, True),  # 0: kept
    "push.log_retention_days": (0, True),  # 0: kept
    "auth.max_failures": (0, True),  # 0: no throttle
    "auth.failure_window": (0, False),
    "auth.block_time": (0, False),
    "auth.token_ttl": (0, False),
}


def _check_ranges(config: Config) -> None:
    for key, (bound, inclusive) in _LOWEST.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value < bound or (value == bound and not inclusive):
            need = f"at least {bound:g}" if inclusive else f"greater than {bound:g}"
            raise ConfigError(f"{key!r} must be {need}, got {value:g}")
    sip = config.sip
    if sip.default_expires < sip.min_expires:
        raise ConfigError(
            f"'sip.default_expires' ({sip.default_expires}) must be at least "
            f"'sip.min_expires' ({sip.min_expires})"
        )
    if sip.max_expires < sip.default_expires:
        raise ConfigError(
            f"'sip.max_expires' ({sip.max_expires}) must be at least "
            f"'sip.default_expires' ({sip.default_expires})"
        )
    if sip.t2 < sip.t1:  # T2 caps the retransmit interval that starts at T1
        raise ConfigError(f"'sip.t2' ({sip.t2:g}) must be at least 'sip.t1' ({sip.t1:g})")


def _finish(config: Config) -> None:
    """Derived defaults and cross-field checks, after file and environment."""
    sip = config.sip
    if not sip.realm:
        sip.realm = sip.domain
    if not sip.domain:
        raise ConfigError("'sip.domain' must not be empty")
    for spec in sip.listen:
        try:
            parse_listen(spec)
        except ConfigError as exc:
            raise ConfigError(f"'sip.listen': {exc}") from None
    parse_host_port(config.http.listen, "'http.listen'")
    for peer in sip.trusted_peers:
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise ConfigError(f"'sip.trusted_peers': {peer!r} is not an IP or CIDR") from None
    algorithms = []
    for a in sip.digest_algorithms:
        canonical = "SHA-256" if a.upper() in ("SHA-256", "SHA256") else a.upper()
        if canonical not in DIGEST_ALGORITHMS:
            raise ConfigError(
                f"'sip.digest_algorithms': {a!r} is not one of {', '.join(DIGEST_ALGORITHMS)}"
            )
        algorithms.append(canonical)
    if not algorithms:
        raise ConfigError("'sip.digest_algorithms' must not be empty")
    sip.digest_algorithms = algorithms
    _check_ranges(config)
    if sip.tls_key and not sip.tls_cert:
        raise ConfigError("'sip.tls_key' is set without 'sip.tls_cert'")
    if config.http.tls_key and not config.http.tls_cert:
        raise ConfigError("'http.tls_key' is set without 'http.tls_cert'")
    if sip.advertise:
        _check_advertise(sip.advertise)
    secure = {parse_listen(s).transport for s in sip.listen} & {"tls", "wss"}
    if secure and not sip.tls_cert:
        raise ConfigError(
            f"a {sorted(secure)[0]}: listener needs 'sip.tls_cert' (and 'sip.tls_key')"
        )
    if not config.store.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError("'store.url' must be sqlite:///… or postgresql://…")
    config.log.level = config.log.level.upper()
    if config.log.level not in LOG_LEVELS:
        raise ConfigError(f"'log.level' must be one of {', '.join(LOG_LEVELS)}")
    config.log.format = config.log.format.lower()
    if config.log.format not in LOG_FORMATS:
        raise ConfigError(f"'log.format' must be one of {', '.join(LOG_FORMATS)}")
    if config.cluster.redis_url:
        # DESIGN "Cluster": the same secret signs nonces and the routes between nodes,
        # and durable state is shared in PostgreSQL
        if not sip.secret:
            raise ConfigError(
                "[cluster] redis_url is set but [sip] secret is empty: every node of a "
                "cluster needs the same secret (nonces and routes between nodes are "
                "signed with it)"
            )
        if not config.store.url.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                "[cluster] redis_url is set but [store] url is not PostgreSQL: the nodes "
                "of a cluster share one PostgreSQL database"
            )
        if not config.cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("[cluster] redis_url must be redis://, rediss:// or unix://")
