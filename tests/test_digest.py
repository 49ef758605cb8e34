"""Digest authentication: known answers, verification outcomes, parser robustness."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.sip.digest import (
    AuthResult,
    Credentials,
    DigestAuth,
    compute_response,
    ha1,
    parse_credentials,
)
from sipwake.testing import ManualScheduler

SECRET = b"test-secret-0123456789"
REALM = "example.com"
USER = "alice"
PASSWORD = "s3cret"
URI = "sip:example.com"


def nonce_of(challenge: str) -> str:
    creds = challenge.split('nonce="', 1)[1]
    return creds.split('"', 1)[0]


def answer(
    auth: DigestAuth,
    nonce: str,
    *,
    algorithm: str = "MD5",
    password: str = PASSWORD,
    nc: str = "00000001",
    method: str = "REGISTER",
    realm: str = REALM,
) -> Credentials:
    """What a well-behaved client sends back."""
    h = ha1(USER, realm, password, algorithm)
    response = compute_response(algorithm, h, method, URI, nonce, nc, "c0ffee")
    value = (
        f'Digest username="{USER}", realm="{realm}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}", algorithm={algorithm}, cnonce="c0ffee", qop=auth, '
        f'nc={nc}, opaque="{auth.opaque}"'
    )
    creds = parse_credentials(value)
    assert creds is not None
    return creds


@pytest.fixture
def clock() -> ManualScheduler:
    return ManualScheduler(1_700_000_000.0)


@pytest.fixture
def auth(clock: ManualScheduler) -> DigestAuth:
    return DigestAuth(SECRET, REALM, clock=clock.time)


def user_ha1(algorithm: str = "MD5") -> str:
    return ha1(USER, REALM, PASSWORD, algorithm)


# --- known answers ---


def test_rfc2617_example_md5() -> None:
    # RFC 2617 §3.5.
    h = ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert h == "939e7578ed9e3c518a452acee763bce9"
    nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    response = compute_response("MD5", h, "GET", "/dir/index.html", nonce, "00000001", "0a4f113b")
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_example_sha256() -> None:
    # RFC 7616 §3.9.1, cross-checked against hashlib directly.
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    h = ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")
    assert h == hashlib.sha256(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
    response = compute_response("SHA-256", h, "GET", "/dir/index.html", nonce, "00000001", cnonce)
    ha2 = hashlib.sha256(b"GET:/dir/index.html").hexdigest()
    manual = hashlib.sha256(f"{h}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
    assert response == manual
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_ha1_algorithm_names_case_insensitive() -> None:
    assert ha1("a", "r", "p", "md5") == hashlib.md5(b"a:r:p").hexdigest()
    assert ha1("a", "r", "p", "sha-256") == hashlib.sha256(b"a:r:p").hexdigest()
    with pytest.raises(ValueError):
        ha1("a", "r", "p", "SHA-512-256")


# --- parsing ---


def test_parse_full_header() -> None:
    creds = parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b", '
        'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae4", opaque="5ccc069c", algorithm=MD5'
    )
    assert creds == Credentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b",
        uri="/dir/index.html",
        response="6629fae4",
        algorithm="MD5",
        cnonce="0a4f113b",
        qop="auth",
        nc="00000001",
        opaque="5ccc069c",
    )


def test_parse_tolerant_forms() -> None:
    creds = parse_credentials(
        '  dIgEsT\tRESPONSE = "abc" ,uri="sip:x" ,, REALM="r\\"q\\\\" ,'
        'nonce=n1,username="bob",algorithm=sha-256,QOP="AUTH" ,'
    )
    assert creds is not None
    assert creds.username == "bob"
    assert creds.realm == 'r"q\\'
    assert creds.nonce == "n1"
    assert creds.response == "abc"
    assert creds.algorithm == "SHA-256"
    assert creds.qop == "auth"


def test_parse_algorithm_defaults_to_md5() -> None:
    creds = parse_credentials('Digest username="a", realm="r", nonce="n", uri="u", response="x"')
    assert creds is not None and creds.algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest ",
        'Basic username="a"',
        'Digestusername="a", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a, realm="r", nonce="n", uri="u", response="x"',  # unbalanced
        'Digest username="a" realm="r", nonce="n", uri="u", response="x"',  # no comma
        'Digest username=a b, realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest user name="a", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x\\',
        'Digest username=, realm="r", nonce="n", uri="u", response="x"',
        "Digest " + "a=" * 10_000,
    ],
)
def test_parse_rejects_malformed(value: str) -> None:
    assert parse_credentials(value) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_on_text(value: str) -> None:
    parse_credentials(value)
    parse_credentials("Digest " + value)


NAMES = st.sampled_from(["username", "realm", "nonce", "uri", "response", "nc", "qop", "x"])
NASTY = st.text(alphabet=' ",\\=a\t')  # the characters the parser cares about


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, NASTY, st.booleans()), max_size=8))
def test_parse_never_raises_on_near_valid(params: list[tuple[str, str, bool]]) -> None:
    value = "Digest " + ", ".join(f'{k}="{v}"' if q else f"{k}={v}" for k, v, q in params)
    parse_credentials(value)


@settings(max_examples=100, deadline=None)
@given(st.text(), st.text(), st.text())
def test_verify_never_raises(junk: str, nonce: str, nc: str) -> None:
    auth = DigestAuth(SECRET, REALM, clock=ManualScheduler(1_700_000_000.0).time)
    creds = Credentials(junk, REALM, nonce, junk, junk, "MD5", junk, "auth", nc, junk)
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL


# --- challenges ---


def test_challenges_order_and_fields(auth: DigestAuth) -> None:
    values = auth.challenges()
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["MD5", "SHA-256"]
    for v in values:
        assert v.startswith('Digest realm="example.com", nonce="')
        assert 'qop="auth"' in v
        assert f'opaque="{auth.opaque}"' in v
        assert "stale" not in v
    assert all("stale=true" in v for v in auth.challenges(stale=True))


def test_challenges_follow_configured_order(clock: ManualScheduler) -> None:
    auth = DigestAuth(SECRET, REALM, ["sha-256", "MD5"], clock=clock.time)
    values = auth.challenges()
    assert "algorithm=SHA-256" in values[0] and "algorithm=MD5" in values[1]


def test_realm_is_quoted_safely(clock: ManualScheduler) -> None:
    auth = DigestAuth(SECRET, 'we"ird\\realm', clock=clock.time)
    creds = parse_credentials(auth.challenges()[0] + ', username="u", uri="u", response="x"')
    assert creds is not None and creds.realm == 'we"ird\\realm'


def test_constructor_rejects_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        DigestAuth(SECRET, REALM, ["MD5-sess"])


# --- verification ---


def test_md5_end_to_end(auth: DigestAuth) -> None:
    nonce = nonce_of(auth.challenges()[0])
    assert auth.verify(answer(auth, nonce), "REGISTER", user_ha1()) is AuthResult.OK


def test_sha256_end_to_end(auth: DigestAuth) -> None:
    challenge = auth.challenges()[1]
    assert "algorithm=SHA-256" in challenge
    creds = answer(auth, nonce_of(challenge), algorithm="SHA-256")
    assert creds.algorithm == "SHA-256"
    assert auth.verify(creds, "REGISTER", user_ha1("SHA-256")) is AuthResult.OK
    # The MD5 HA1 does not verify a SHA-256 response.
    creds2 = answer(auth, nonce_of(challenge), algorithm="SHA-256", nc="00000002")
    assert auth.verify(creds2, "REGISTER", user_ha1("MD5")) is AuthResult.FAIL


def test_other_node_with_same_secret_verifies(auth: DigestAuth, clock: ManualScheduler) -> None:
    other = DigestAuth(SECRET, REALM, clock=clock.time)
    creds = answer(auth, nonce_of(auth.challenges()[0]))
    assert other.verify(creds, "REGISTER", user_ha1()) is AuthResult.OK


def test_nonces_are_unique_across_refills_of_the_random_pool(auth: DigestAuth) -> None:
    nonces = [auth.make_nonce() for _ in range(1500)]  # 512 per 4 KiB of OS randomness
    assert len(set(nonces)) == len(nonces)
    creds = answer(auth, nonces[-1])
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.OK


def test_wrong_password_fails(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce(), password="guess")
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL


def test_tampered_response_fails(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce())
    flipped = ("0" if creds.response[0] != "0" else "1") + creds.response[1:]
    tampered = Credentials(**{**_fields(creds), "response": flipped})
    assert auth.verify(tampered, "REGISTER", user_ha1()) is AuthResult.FAIL


def test_other_method_fails(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce(), method="REGISTER")
    assert auth.verify(creds, "INVITE", user_ha1()) is AuthResult.FAIL


def test_wrong_realm_fails(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce(), realm="evil.example")
    assert auth.verify(creds, "REGISTER", ha1(USER, "evil.example", PASSWORD)) is AuthResult.FAIL


def test_forged_nonce_fails(auth: DigestAuth, clock: ManualScheduler) -> None:
    forger = DigestAuth(b"another secret", REALM, clock=clock.time)
    creds = answer(auth, forger.make_nonce())
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL
    # Same secret, other realm: nonces are bound to the realm.
    creds = answer(auth, DigestAuth(SECRET, "other.example", clock=clock.time).make_nonce())
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL


def test_expired_nonce_is_stale_only_with_right_password(
    auth: DigestAuth, clock: ManualScheduler
) -> None:
    nonce = auth.make_nonce()
    clock.advance(301)
    assert auth.verify(answer(auth, nonce), "REGISTER", user_ha1()) is AuthResult.STALE
    bad = answer(auth, nonce, password="guess")
    assert auth.verify(bad, "REGISTER", user_ha1()) is AuthResult.FAIL


def test_nonce_valid_until_ttl(auth: DigestAuth, clock: ManualScheduler) -> None:
    nonce = auth.make_nonce()
    clock.advance(299)
    assert auth.verify(answer(auth, nonce), "REGISTER", user_ha1()) is AuthResult.OK


def test_nonce_count_replay(auth: DigestAuth) -> None:
    nonce = auth.make_nonce()
    first = answer(auth, nonce, nc="00000001")
    assert auth.verify(first, "REGISTER", user_ha1()) is AuthResult.OK
    assert auth.verify(first, "REGISTER", user_ha1()) is AuthResult.REPLAY
    assert auth.verify(answer(auth, nonce, nc="00000002"), "REGISTER", user_ha1()) is (
        AuthResult.OK
    )
    assert auth.verify(answer(auth, nonce, nc="0000000a"), "REGISTER", user_ha1()) is (
        AuthResult.OK
    )
    assert auth.verify(answer(auth, nonce, nc="00000009"), "REGISTER", user_ha1()) is (
        AuthResult.REPLAY
    )


def test_replay_table_is_pruned_and_bounded(clock: ManualScheduler) -> None:
    auth = DigestAuth(SECRET, REALM, clock=clock.time, max_nonces=3)
    old = auth.make_nonce()
    assert auth.verify(answer(auth, old), "REGISTER", user_ha1()) is AuthResult.OK
    clock.advance(400)
    nonces = [auth.make_nonce() for _ in range(4)]
    for n in nonces[:3]:
        assert auth.verify(answer(auth, n), "REGISTER", user_ha1()) is AuthResult.OK
    assert auth._nonce_key(old) not in auth._seen  # expired, pruned
    clock.advance(1)
    fresh = auth.make_nonce()
    assert auth.verify(answer(auth, fresh), "REGISTER", user_ha1()) is AuthResult.OK
    assert len(auth._seen) == 3
    # nonces[0] was evicted: a replay of it must not pass, it is sent to re-challenge.
    replay = answer(auth, nonces[0])
    assert auth.verify(replay, "REGISTER", user_ha1()) is AuthResult.STALE
    # Unused nonce from before the eviction horizon: also re-challenged, never accepted.
    assert auth.verify(answer(auth, nonces[3]), "REGISTER", user_ha1()) is AuthResult.STALE


def test_missing_or_bad_fields_fail(auth: DigestAuth) -> None:
    good = _fields(answer(auth, auth.make_nonce()))
    for change in (
        {"qop": ""},
        {"qop": "auth-int"},
        {"cnonce": ""},
        {"nc": ""},
        {"nc": "1"},
        {"nc": "+0000001"},
        {"nc": "0000_001"},
        {"nc": "00000000"},
        {"algorithm": "MD5-SESS"},
        {"opaque": "not-ours"},
        {"nonce": ""},
    ):
        creds = Credentials(**{**good, **change})
        assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL, change
    assert auth.verify(Credentials(**good), "REGISTER", "") is AuthResult.FAIL


def test_missing_opaque_accepted(auth: DigestAuth) -> None:
    creds = Credentials(**{**_fields(answer(auth, auth.make_nonce())), "opaque": ""})
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.OK


def test_uppercase_response_accepted(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce())
    upper = Credentials(**{**_fields(creds), "response": creds.response.upper()})
    assert auth.verify(upper, "REGISTER", user_ha1()) is AuthResult.OK


def test_request_uri_checked_when_given(auth: DigestAuth) -> None:
    creds = answer(auth, auth.make_nonce())
    assert auth.verify(creds, "REGISTER", user_ha1(), request_uri="sip:other") is AuthResult.FAIL
    assert auth.verify(creds, "REGISTER", user_ha1(), request_uri=URI) is AuthResult.OK


def test_algorithm_not_offered_fails(clock: ManualScheduler) -> None:
    auth = DigestAuth(SECRET, REALM, ["SHA-256"], clock=clock.time)
    creds = answer(auth, auth.make_nonce(), algorithm="MD5")
    assert auth.verify(creds, "REGISTER", user_ha1()) is AuthResult.FAIL


def _fields(creds: Credentials) -> dict[str, str]:
    return {name: getattr(creds, name) for name in Credentials.__dataclass_fields__}


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_quoted_values_round_trip(username: str, uri: str) -> None:
    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    value = f"Digest username={q(username)}, realm={q('r')}, nonce=n, uri={q(uri)}, response=x"
    creds = parse_credentials(value)
    if len(value) <= 8192:
        assert creds is not None
        assert (creds.username, creds.uri) == (username, uri)
