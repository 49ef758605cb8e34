"""SIP digest authentication: RFC 3261 §22 with RFC 2617 qop, RFC 7616/8760 SHA-256.

Pure logic on header value strings, no I/O. The caller (the registrar) picks the
user's stored HA1 by `Credentials.algorithm` and asks `DigestAuth.verify`.

Nonces are stateless so any node holding the same secret can check them:
base64url(timestamp ‖ random ‖ HMAC-SHA256(secret, timestamp ‖ random ‖ realm)).
Only the nonce-count replay table is per process (see `DigestAuth`).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipwake.ids import random_bytes

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "Credentials",
    "DigestAuth",
    "canonical_algorithm",
    "compute_response",
    "ha1",
    "parse_credentials",
]

ALGORITHMS = ("MD5", "SHA-256")

_TS = struct.Struct(">Q")
_RAND_LEN = 8
_MAC_LEN = 16
_NONCE_RAW_LEN = _TS.size + _RAND_LEN + _MAC_LEN  # 32 bytes
_NONCE_LEN = 43  # base64url of 32 bytes, padding stripped
_SPENT = 1 << 32  # above any 8-hex-digit nonce-count: nothing is accepted on it again


class AuthResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password on an expired nonce: challenge again with stale=true
    FAIL = "fail"  # wrong password, forged nonce, wrong realm, missing or bad fields
    REPLAY = "replay"  # nonce-count not above the last one seen for this nonce


@dataclass(frozen=True, slots=True, init=False)
class Credentials:
    """A parsed `Authorization`/`Proxy-Authorization` Digest value.

    `algorithm` is canonical ("MD5", "SHA-256") when recognised, defaults to "MD5"
    when absent (RFC 2617 §3.2.2), otherwise the client's token upper-cased.
    `qop` is lower-cased; other values are kept as sent.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    cnonce: str
    qop: str
    nc: str
    opaque: str

    def __init__(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        algorithm: str = "MD5",
        cnonce: str = "",
        qop: str = "",
        nc: str = "",
        opaque: str = "",
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "realm", realm)
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "cnonce", cnonce)
        object.__setattr__(self, "qop", qop)
        object.__setattr__(self, "nc", nc)
        object.__setattr__(self, "opaque", opaque)


def canonical_algorithm(name: str) -> str:
    """Map "md5" → "MD5", "sha-256" → "SHA-256"; anything else upper-cased."""
    upper = name.upper()
    return "SHA-256" if upper == "SHA256" else upper


def _md5_hex(data: str) -> str:
    # MD5 is what the protocol mandates, not our choice: mark it so FIPS builds allow it.
    return hashlib.md5(data.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def _sha256_hex(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


_HASHES: dict[str, Callable[[str], str]] = {"MD5": _md5_hex, "SHA-256": _sha256_hex}


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password), the value stored per user instead of the password."""
    h = _HASHES.get(canonical_algorithm(algorithm))
    if h is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return h(f"{username}:{realm}:{password}")


def compute_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The qop=auth `response` directive (RFC 2617 §3.2.2.1); also what a client sends."""
    h = _HASHES.get(canonical_algorithm(algorithm))
    if h is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    ha2 = h(f"{method}:{uri}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- parsing ---------------------------------------------------------------

_WS = " \t\r\n"
# RFC 3261 token characters; a parameter name must consist of these.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_HEX = frozenset("0123456789abcdefABCDEF")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")
_MAX_HEADER = 8192  # far beyond any honest credential; bounds the work per request


# One directive: `name = token` or `name = "quoted"`, then a comma or the end. The name
# is RFC 3261 token characters (checked before lower(): some non-ASCII letters
# lower-case to ASCII ones); a token value has no whitespace, quote or comma. The quoted
# string is written as runs between escapes ("unrolled"): one alternation per character
# made this match half of the parse.
_DIRECTIVE = re.compile(
    r"[ \t\r\n,]*([-.!%*_+`'~0-9A-Za-z]+)[ \t\r\n]*=[ \t\r\n]*"
    r'(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t\r\n",]+))[ \t\r\n]*(?:,|$)',
    re.S,
)
_UNESCAPE = re.compile(r"\\(.)", re.S)
_TRAILING = re.compile(r"[ \t\r\n,]*")


def _parse_params(s: str, i: int) -> dict[str, str] | None:
    """Comma-separated `name=value` pairs from s[i:]; None when malformed.

    Each directive is one match of a compiled pattern, so the per-character work runs
    in C: this runs for every authenticated request.
    """
    params: dict[str, str] = {}
    n = len(s)
    match = _DIRECTIVE.match
    while True:
        m = match(s, i)
        if m is None:
            # nothing but separators may be left ("a=1, ,b=2," is legal #rule syntax)
            return params if _TRAILING.match(s, i).end() == n else None  # type: ignore[union-attr]
        name, quoted, token = m.group(1, 2, 3)
        name = name.lower()
        if name in params:
            return None  # RFC 7616 §3.4: each directive at most once
        if token is not None:
            params[name] = token
        elif "\\" in quoted:
            params[name] = _UNESCAPE.sub(r"\1", quoted)
        else:
            params[name] = quoted
        i = m.end()
        if i >= n:
            return params


def parse_credentials(header_value: str) -> Credentials | None:
    """Parse a Digest `Authorization`/`Proxy-Authorization` value.

    None for another scheme, malformed syntax, or a missing required directive
    (username, realm, nonce, uri, response) — the caller then challenges afresh.
    Never raises.
    """
    if len(header_value) > _MAX_HEADER:
        return None
    s = header_value.lstrip(_WS)
    if len(s) < 7 or s[:6].lower() != "digest" or s[6] not in _WS:
        return None
    p = _parse_params(s, 7)
    if p is None:
        return None
    for key in _REQUIRED:
        if key not in p:
            return None
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"],
        algorithm=canonical_algorithm(p.get("algorithm", "MD5")),
        cnonce=p.get("cnonce", ""),
        qop=p.get("qop", "").lower(),
        nc=p.get("nc", ""),
        opaque=p.get("opaque", ""),
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- server side -------------------------------------------------------------


class DigestAuth:
    """Issues challenges and verifies responses for one realm.

    Only qop=auth is accepted: we always offer it, and RFC 2069-style responses
    (no qop, no cnonce, no nonce-count) give no replay protection. auth-int and
    the -sess algorithms are not offered and fail.

    Replay protection remembers, per nonce, the highest nonce-count seen. The
    table lives in this process (a replay sent to another cluster node is not
    caught), is pruned as nonces expire, and is capped at `max_nonces` entries.
    When the cap evicts an entry, nonces issued no later than the evicted one and
    unknown to the table are answered STALE, so eviction never reopens a replay.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        algorithms: Iterable[str] = ALGORITHMS,
        nonce_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        max_nonces: int = 100_000,
    ) -> None:
        if not secret:
            raise ValueError("digest secret must not be empty")
        self.realm = realm
        self.algorithms = [canonical_algorithm(a) for a in algorithms]
        for a in self.algorithms:
            if a not in _HASHES:
                raise ValueError(f"unsupported digest algorithm {a!r}")
        if not self.algorithms:
            raise ValueError("at least one digest algorithm is required")
        self.nonce_ttl = nonce_ttl
        self.clock = clock
        self.max_nonces = max_nonces
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8", "surrogatepass")
        # Constant per secret and realm, so every node hands out the same one.
        self.opaque = _b64(hmac.digest(secret, b"opaque\0" + self._realm_bytes, "sha256")[:12])
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        # nonce → highest nc seen, in first-use order. A nonce is keyed by its first 16
        # bytes as one int (issue timestamp ‖ random: the timestamp is key >> 64), not
        # by its text: a REGISTER a second makes this table a few hundred thousand long.
        # (a dict and the order in a deque: an OrderedDict's links cost 50 bytes more a
        # nonce, 5 MB at 100,000 REGISTERs within the TTL)
        self._seen: dict[int, int] = {}
        self._order: deque[int] = deque()
        self._evicted_upto = -1  # newest issue timestamp ever evicted by the cap
        # a cluster's other nodes are told of each nonce-count used (sipwake.cluster)
        self.on_seen: Callable[[str, int, int], None] | None = None

    # -- nonces --

    def _mac(self, head: bytes) -> bytes:
        # from a keyed prototype: hmac.digest(key, msg, "sha256") looks the algorithm up
        # by name on every call, which under load cost ten times the MAC itself
        mac = self._keyed.copy()
        mac.update(head + self._realm_bytes)
        return mac.digest()[:_MAC_LEN]

    def make_nonce(self) -> str:
        head = _TS.pack(int(self.clock())) + random_bytes(_RAND_LEN)
        return _b64(head + self._mac(head))

    def _nonce_key(self, nonce: str) -> int | None:
        """A nonce we minted as its replay-table key (its issue timestamp is
        key >> 64), None for anything else."""
        if len(nonce) != _NONCE_LEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:  # binascii.Error, or non-ASCII text
            return None
        if len(raw) != _NONCE_RAW_LEN:
            return None
        head = raw[: _TS.size + _RAND_LEN]
        if not hmac.compare_digest(raw[len(head) :], self._mac(head)):
            return None
        return int.from_bytes(head, "big")

    # -- challenges --

    def challenges(self, stale: bool = False) -> list[str]:
        """One WWW-Authenticate/Proxy-Authenticate value per algorithm, in the
        configured order (MD5 first by default: many phones read only the first).
        They share one nonce."""
        nonce = self.make_nonce()
        tail = ', qop="auth", stale=true' if stale else ', qop="auth"'
        head = f'Digest realm={_quote(self.realm)}, nonce="{nonce}", opaque="{self.opaque}"'
        return [f"{head}, algorithm={a}{tail}" for a in self.algorithms]

    # -- verification --

    def verify(
        self,
        creds: Credentials,
        method: str,
        ha1: str,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check a response against the user's HA1 for `creds.algorithm`.

        `request_uri`, when given, must equal the `uri` directive (RFC 2617 §3.2.2.5);
        it is optional because clients format the Request-URI inconsistently.
        """
        if creds.algorithm not in self.algorithms or not ha1:
            return AuthResult.FAIL
        if creds.realm != self.realm or creds.qop != "auth" or not creds.cnonce:
            return AuthResult.FAIL
        if creds.opaque and creds.opaque != self.opaque:
            return AuthResult.FAIL
        if request_uri is not None and creds.uri != request_uri:
            return AuthResult.FAIL
        nc_text = creds.nc
        # Checked by hand: int() would also take "+", "_" and whitespace.
        if len(nc_text) != 8 or not _HEX.issuperset(nc_text):
            return AuthResult.FAIL
        nc = int(nc_text, 16)
        if nc < 1:
            return AuthResult.FAIL  # nonce-counts start at 1
        key = self._nonce_key(creds.nonce)
        if key is None:
            return AuthResult.FAIL
        ts = key >> 64
        if self._seen.get(key) == _SPENT:
            return AuthResult.REPLAY  # not even checked: a spent nonce proves nothing

        expected = compute_response(
            creds.algorithm, ha1.lower(), method, creds.uri, creds.nonce, nc_text, creds.cnonce
        )
        response = creds.response.lower().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected.encode("ascii"), response):
            # A wrong answer spends the nonce: every guess costs a new challenge.
            if abs(self.clock() - ts) <= self.nonce_ttl:
                self._remember(creds.nonce, key, _SPENT)
            return AuthResult.FAIL

        # Only a correct response reaches here: RFC 2617 says stale=true only when
        # the password was right, and the replay table is never fed by strangers.
        now = self.clock()
        age = now - ts
        if age > self.nonce_ttl:
            return AuthResult.STALE
        if age < -self.nonce_ttl:
            return AuthResult.FAIL  # from the far future: a clock gone wrong somewhere
        return self._check_nc(creds.nonce, key, nc, now)

    def _check_nc(self, nonce: str, key: int, nc: int, now: float) -> AuthResult:
        seen = self._seen
        # Prune from the front: first-use order is close to issue order, so the
        # expired entries sit there. A few stragglers behind a fresh one are harmless.
        horizon = now - self.nonce_ttl
        order = self._order
        while order and order[0] >> 64 < horizon:
            del seen[order.popleft()]
        entry = seen.get(key)
        if entry is None:
            if key >> 64 <= self._evicted_upto:
                return AuthResult.STALE  # its history may have been evicted
        elif nc <= entry:
            return AuthResult.REPLAY
        self._remember(nonce, key, nc)
        return AuthResult.OK

    def _remember(self, nonce: str, key: int, nc: int) -> None:
        """A nonce-count used here (or the nonce spent): kept, and the others told."""
        self._keep(key, nc)
        if self.on_seen is not None:
            self.on_seen(nonce, key >> 64, nc)

    def _keep(self, key: int, nc: int) -> None:
        seen = self._seen
        if key not in seen:
            if len(seen) >= self.max_nonces:
                evicted = self._order.popleft()
                del seen[evicted]
                self._evicted_upto = max(self._evicted_upto, evicted >> 64)
            self._order.append(key)
        seen[key] = nc

    def seen_elsewhere(self, nonce: str, ts: int, nc: int) -> None:
        """Another node took this nonce-count (or spent the nonce): replay protection
        holds across the cluster."""
        key = self._nonce_key(nonce)
        if key is None:
            return  # not one of this cluster's nonces (a secret not shared?)
        entry = self._seen.get(key)
        if (entry is None or entry < nc) and self.clock() - (key >> 64) <= self.nonce_ttl:
            self._keep(key, nc)
