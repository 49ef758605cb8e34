"""RFC 8599 push parameters in a REGISTER Contact URI (§4.1.1).

`pn-provider` is `apns` or `fcm`; `pn-prid` the device token; `pn-param` for APNs is
`<team id>.<bundle id>.<service>` where service is `voip` (PushKit token), `apns` or
`remote` (alert token), or `remote&voip` with both tokens in one pn-prid:
`<alert token>:remote&<voip token>:voip` (the form liblinphone and Flexisip use).
A bundle id ending in `.dev` means the APNs sandbox (as liblinphone/Flexisip do).
For FCM, pn-param is the Firebase project id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from sipwake.push.tokens import apns_token_problem, fcm_token_problem

PROVIDERS = ("apns", "fcm")
PN_PARAMS = ("pn-provider", "pn-prid", "pn-param", "pn-purr")
_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")
_APNS_SERVICES = {"voip", "apns", "remote", "remote&voip", "voip&remote"}


class PushParamError(ValueError):
    """pn-* parameters present but malformed: the REGISTER gets 400 with this text."""


class UnsupportedProvider(ValueError):
    """pn-provider names a service we do not support: the REGISTER gets 555."""


@dataclass(frozen=True, slots=True, init=False)
class PushParams:
    provider: str  # "apns" | "fcm"
    push_token: str  # APNs alert token, or FCM registration token
    voip_token: str  # APNs PushKit token
    topic: str  # APNs bundle id, or FCM project id
    team_id: str
    sandbox: bool
    raw_param: str
    raw_prid: str

    def __init__(
        self,
        provider: str,
        push_token: str,
        voip_token: str,
        topic: str,
        team_id: str,
        sandbox: bool,
        raw_param: str,
        raw_prid: str,
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "provider", provider)
        object.__setattr__(self, "push_token", push_token)
        object.__setattr__(self, "voip_token", voip_token)
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "team_id", team_id)
        object.__setattr__(self, "sandbox", sandbox)
        object.__setattr__(self, "raw_param", raw_param)
        object.__setattr__(self, "raw_prid", raw_prid)

    @property
    def platform(self) -> str:
        return "ios" if self.provider == "apns" else "android"


def parse_push_params(params: dict[str, str | None]) -> PushParams | None:
    """Read pn-* from a Contact URI's parameters; None when the contact has none."""
    provider = params.get("pn-provider")
    if provider is None:
        if any(k in params for k in ("pn-prid", "pn-param")):
            raise PushParamError("pn-prid/pn-param without pn-provider")
        return None
    provider = unquote(provider).strip().lower()
    if provider not in PROVIDERS:
        raise UnsupportedProvider(provider)
    prid = unquote(params.get("pn-prid") or "").strip()
    param = unquote(params.get("pn-param") or "").strip()
    if not prid:
        raise PushParamError("pn-prid missing")
    if provider == "fcm":
        if problem := fcm_token_problem(prid):
            raise PushParamError(f"pn-prid: {problem}")
        return PushParams("fcm", prid, "", param, "", False, param, prid)
    return _parse_apns(prid, param)


def _parse_apns(prid: str, param: str) -> PushParams:
    team, dot, rest = param.partition(".")
    bundle, dot2, service = rest.rpartition(".")
    if not dot or not dot2 or not bundle or not _TEAM_ID.match(team):
        raise PushParamError("pn-param must be <team id>.<bundle id>.<service>")
    service = service.lower()
    if service not in _APNS_SERVICES:
        raise PushParamError(f"unknown APNs service {service!r} in pn-param")
    sandbox = bundle.endswith(".dev")
    if sandbox:
        bundle = bundle[: -len(".dev")]
    alert = voip = ""
    if "&" in service:
        # "<alert token>:remote&<voip token>:voip"
        for part in prid.split("&"):
            token, _, kind = part.rpartition(":")
            if kind == "remote":
                alert = token
            elif kind == "voip":
                voip = token
            else:
                raise PushParamError("pn-prid must be <token>:remote&<token>:voip")
    elif service == "voip":
        voip = prid
    else:
        alert = prid
    alert, voip = alert.lower(), voip.lower()  # hex: one spelling, so one token is one device
    if not (alert or voip):
        raise PushParamError("no APNs token in pn-prid")
    for token in (alert, voip):
        if token and (problem := apns_token_problem(token)):
            raise PushParamError(f"pn-prid: {problem}")
    return PushParams("apns", alert, voip, bundle, team, sandbox, param, prid)


def strip_push_params(params: dict[str, str | None]) -> dict[str, str | None]:
    """The URI parameters without pn-*: push data never leaves the server."""
    return {k: v for k, v in params.items() if not k.startswith("pn-")}
