"""The APNs provider token: one ES256 JWT per team, shared by every connection.

Apple refuses tokens older than an hour (403 ExpiredProviderToken) and throttles
teams that mint new ones more often than every 20 minutes
(429 TooManyProviderTokenUpdates), so the token is minted once, reused by every
request on every connection, and replaced after `refresh_after` (50 min).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

REFRESH_AFTER = 50 * 60.0


def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an APNs auth key (.p8: PKCS#8 PEM of a P-256 key)."""
    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("APNs key must be a P-256 (ES256) private key")
    return key


class ProviderToken:
    def __init__(
        self,
        team_id: str,
        key_id: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        clock: Callable[[], float] = time.time,
        refresh_after: float = REFRESH_AFTER,
    ) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self._key = key
        self._clock = clock
        self._refresh_after = refresh_after
        self._header = b""  # b"bearer <jwt>"
        self._issued_at = 0.0
        self.minted = 0  # how many tokens this process made (for tests and metrics)

    def header(self) -> bytes:
        """The authorization header value, minted only when the current one is old."""
        now = self._clock()
        # A clock that went backwards would make Apple see an `iat` in the future.
        if not self._header or not 0 <= now - self._issued_at < self._refresh_after:
            self._mint(now)
        return self._header

    @property
    def issued_at(self) -> float:
        """When the JWT in use was minted (unix s; 0: none yet)."""
        return self._issued_at

    def renew(self, stale: bytes) -> None:
        """Apple said `stale` expired: mint once, however many requests saw it."""
        if stale == self._header:
            self._mint(self._clock())

    def _mint(self, now: float) -> None:
        token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._header = b"bearer " + token.encode()
        self._issued_at = float(int(now))
        self.minted += 1
