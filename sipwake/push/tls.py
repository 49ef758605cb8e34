"""Provider URLs and TLS trust (DESIGN.md "Provider URLs and trust")."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str  # "https" | "http"
    host: str
    port: int
    base_path: str  # without trailing slash

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"


def parse_origin(url: str, allow_insecure: bool) -> Origin:
    """Check a provider base URL: https, or plain http only for local test servers."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"push provider URL must be https://host[:port]: {url!r}")
    if parts.scheme == "http" and not allow_insecure:
        raise ValueError(f"plain http:// push provider URL needs allow_insecure = true: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def client_context(ca_file: str = "", alpn: list[str] | None = None) -> ssl.SSLContext:
    """Verify against the system trust store plus `ca_file`.

    `create_default_context` loads OpenSSL's default verify paths, which honour the
    SSL_CERT_FILE and SSL_CERT_DIR environment variables; certifi is never used.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
