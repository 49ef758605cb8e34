"""Configuration: embedded defaults, TOML file, SIPWAKE_* overrides, validation."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from sipwake.config import Config, ConfigError, ListenSpec, load_config, parse_listen
from sipwake.store import create_store


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sipwake.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file() -> None:
    cfg = load_config(None, env={})
    assert isinstance(cfg, Config)
    assert cfg.store.url == "sqlite:///sipwake.db"
    assert cfg.sip.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert cfg.http.listen == "127.0.0.1:8080"
    assert cfg.sip.domain == cfg.sip.realm == "localhost"
    assert cfg.sip.digest_algorithms == ["MD5", "SHA-256"]
    assert (cfg.sip.t1, cfg.sip.t2, cfg.sip.t4) == (0.5, 4.0, 5.0)
    assert cfg.calls.park_timeout == 30 and cfg.calls.alert_repeat == 15
    assert cfg.push.apns.url == "https://api.push.apple.com"
    assert cfg.push.apns.sandbox_url == "https://api.sandbox.push.apple.com"
    assert cfg.push.fcm.url == "https://fcm.googleapis.com"
    assert cfg.push.apns.allow_insecure is False
    assert cfg.cluster.redis_url == ""
    assert cfg.log.level == "INFO"


def test_defaults_are_not_shared_between_loads() -> None:
    a = load_config(None, env={})
    a.sip.listen.append("tcp:127.0.0.1:1")
    assert load_config(None, env={}).sip.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[sip]
domain = "example.com"
listen = ["udp:0.0.0.0:5070", "tls:[::]:5061"]
tls_cert = "cert.pem"
min_expires = 30
t1 = 1            # an integer is fine for a float key
trusted_peers = ["10.0.0.0/8", "2001:db8::1"]
digest_algorithms = ["sha-256", "md5"]

[http]
listen = "[::1]:9000"

[store]
url = "postgresql://sip@db/sipwake"

[push.apns]
team_id = "TEAM123"
url = "http://127.0.0.1:8443"
allow_insecure = true

[push.fcm]
project_id = "proj"

[calls]
park_timeout = 45.5

[voicemail]
notifiers = ["vm"]

[log]
level = "debug"
""",
    )
    cfg = load_config(path, env={})
    assert cfg.sip.domain == cfg.sip.realm == "example.com"
    assert cfg.sip.listen == ["udp:0.0.0.0:5070", "tls:[::]:5061"]
    assert cfg.sip.min_expires == 30
    assert cfg.sip.t1 == 1.0 and isinstance(cfg.sip.t1, float)
    assert cfg.sip.digest_algorithms == ["SHA-256", "MD5"]
    assert cfg.http.listen == "[::1]:9000"
    assert cfg.store.url == "postgresql://sip@db/sipwake"
    assert cfg.push.apns.team_id == "TEAM123"
    assert cfg.push.apns.allow_insecure is True
    assert cfg.push.apns.key_id == ""  # untouched keys keep their defaults
    assert cfg.push.fcm.project_id == "proj"
    assert cfg.calls.park_timeout == 45.5
    assert cfg.voicemail.notifiers == ["vm"]
    assert cfg.log.level == "DEBUG"


def test_explicit_realm_kept(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[sip]\ndomain = "a.com"\nrealm = "r.a.com"\n'), env={})
    assert (cfg.sip.domain, cfg.sip.realm) == ("a.com", "r.a.com")


def test_realm_follows_domain_from_env() -> None:
    cfg = load_config(None, env={"SIPWAKE_SIP_DOMAIN": "env.example"})
    assert cfg.sip.realm == "env.example"


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[push.apns]\nteam_id = "FROMFILE"\n[store]\nurl = "sqlite:///f.db"\n')
    env = {
        "SIPWAKE_PUSH_APNS_TEAM_ID": "FROMENV",
        "SIPWAKE_PUSH_APNS_ALLOW_INSECURE": "yes",
        "SIPWAKE_PUSH_FCM_TOKEN_URL": "http://127.0.0.1:9/token",
        "SIPWAKE_STORE_URL": "sqlite:////tmp/x.db",
        "SIPWAKE_SIP_LISTEN": '["udp:127.0.0.1:5070", "tcp:[::1]:5070"]',
        "SIPWAKE_SIP_TRUSTED_PEERS": "10.1.2.3, 192.168.0.0/16",
        "SIPWAKE_SIP_MAX_EXPIRES": "7200",
        "SIPWAKE_CALLS_PARK_TIMEOUT": "12.5",
        "SIPWAKE_HTTP_LISTEN": "0.0.0.0:8081",
        "PATH": "/usr/bin",  # not ours: ignored silently
    }
    cfg = load_config(path, env=env)
    assert cfg.push.apns.team_id == "FROMENV"
    assert cfg.push.apns.allow_insecure is True
    assert cfg.push.fcm.token_url == "http://127.0.0.1:9/token"
    assert cfg.store.url == "sqlite:////tmp/x.db"
    assert cfg.sip.listen == ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
    assert cfg.sip.trusted_peers == ["10.1.2.3", "192.168.0.0/16"]
    assert cfg.sip.max_expires == 7200
    assert cfg.calls.park_timeout == 12.5
    assert cfg.http.listen == "0.0.0.0:8081"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_env_bool(text: str, expected: bool) -> None:
    cfg = load_config(None, env={"SIPWAKE_PUSH_FCM_ALLOW_INSECURE": text})
    assert cfg.push.fcm.allow_insecure is expected


def test_env_comma_list() -> None:
    cfg = load_config(None, env={"SIPWAKE_SIP_LISTEN": "udp:127.0.0.1:5070,tcp:127.0.0.1:5070"})
    assert cfg.sip.listen == ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
    assert load_config(None, env={"SIPWAKE_SIP_TRUSTED_PEERS": ""}).sip.trusted_peers == []


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SIPWAKE_PUSH_APNS_ALLOW_INSECURE", "maybe"),
        ("SIPWAKE_SIP_MIN_EXPIRES", "1.5"),
        ("SIPWAKE_SIP_T1", "fast"),
        ("SIPWAKE_SIP_LISTEN", "[1, 2]"),
        ("SIPWAKE_SIP_LISTEN", '["udp:127.0.0.1:5060"'),
        ("SIPWAKE_SIP_LISTEN", "carrier-pigeon:127.0.0.1:5060"),
    ],
)
def test_env_bad_values(var: str, value: str) -> None:
    key = var.rsplit("_", 1)[1]  # LISTEN, INSECURE, EXPIRES, T1
    with pytest.raises(ConfigError, match=f"(?i){key}"):
        load_config(None, env={var: value})


def test_unknown_env_variable_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sipwake.config"):
        cfg = load_config(None, env={"SIPWAKE_PUSH_APNS_TEAMID": "x", "SIPWAKE_HOME": "/x"})
    assert cfg.push.apns.team_id == ""
    assert "SIPWAKE_PUSH_APNS_TEAMID" in caplog.text and "SIPWAKE_HOME" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sip]\ndomian = "x"\n', "sip.domian"),
        ('[push.apns]\nteamid = "x"\n', "push.apns.teamid"),
        ('[push.gcm]\nproject_id = "x"\n', r"\[push.gcm\]"),
        ('[sipp]\ndomain = "x"\n', r"\[sipp\]"),
        ('domain = "x"\n', "domain"),
    ],
)
def test_unknown_key_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown .*{message}"):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sip]\nmin_expires = "60"\n', "'sip.min_expires' must be an integer"),
        ("[sip]\nmin_expires = 60.0\n", "'sip.min_expires' must be an integer"),
        ('[sip]\nlisten = "udp:127.0.0.1:5060"\n', "'sip.listen' must be a list of strings"),
        ("[sip]\nlisten = [5060]\n", "'sip.listen' must be a list of strings"),
        ('[push.apns]\nallow_insecure = "true"\n', "'push.apns.allow_insecure' must be a boolean"),
        ("[calls]\npark_timeout = true\n", "'calls.park_timeout' must be a number"),
        ("[http]\nlisten = 8080\n", "'http.listen' must be a string"),
        ("sip = 1\n", "'sip' must be a table"),
        ("[push]\napns = 1\n", "'push.apns' must be a table"),
    ],
)
def test_type_errors_name_key_and_type(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        '[sip]\nlisten = ["udp:127.0.0.1"]\n',
        '[sip]\ntrusted_peers = ["not-an-ip"]\n',
        '[sip]\ndigest_algorithms = ["SHA-512"]\n',
        "[sip]\ndigest_algorithms = []\n",
        "[sip]\nmin_expires = 7200\n",
        '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n',  # no certificate
        '[http]\nlisten = "localhost"\n',
        '[store]\nurl = "mysql://x"\n',
        '[log]\nlevel = "LOUD"\n',
        "[sip]\nt1 = 0\n",
    ],
)
def test_invalid_values_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), env={})


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.toml"), env={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[sip\n"), env={})


def test_a_cluster_needs_one_secret_and_postgresql() -> None:
    redis = {"SIPWAKE_CLUSTER_REDIS_URL": "redis://127.0.0.1"}
    with pytest.raises(ConfigError, match="secret"):
        load_config(None, env=redis)
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load_config(None, env=redis | {"SIPWAKE_SIP_SECRET": "s"})
    with pytest.raises(ConfigError, match="redis://"):
        load_config(None, env={"SIPWAKE_CLUSTER_REDIS_URL": "http://x", "SIPWAKE_SIP_SECRET": "s",
                               "SIPWAKE_STORE_URL": "postgresql://127.0.0.1/test"})  # fmt: skip
    config = load_config(None, env=redis | {"SIPWAKE_SIP_SECRET": "s",
                                            "SIPWAKE_STORE_URL": "postgresql://127.0.0.1/test"})
    assert config.cluster.redis_url == "redis://127.0.0.1"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("tcp:[::1]:5060", ListenSpec("tcp", "::1", 5060)),
        ("tls:0.0.0.0:5061", ListenSpec("tls", "0.0.0.0", 5061)),
        ("ws:127.0.0.1:8081", ListenSpec("ws", "127.0.0.1", 8081)),
        ("UDP:[2001:db8::5]:0", ListenSpec("udp", "2001:db8::5", 0)),
        ("tcp:sip.example.com:5060", ListenSpec("tcp", "sip.example.com", 5060)),
    ],
)
def test_parse_listen(spec: str, expected: ListenSpec) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "udp",
        "udp:127.0.0.1",
        "sctp:127.0.0.1:5060",
        "udp:127.0.0.1:65536",
        "udp:127.0.0.1:-1",
        "udp:127.0.0.1:http",
        "udp::5060",
        "tcp:::1:5060",  # IPv6 needs brackets
        "tcp:[::1]5060",
        "tcp:[::1:5060",
        "tcp:[nothex]:5060",
        "udp:127.0.0.1:",
    ],
)
def test_parse_listen_rejects(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(spec)


@pytest.mark.parametrize("value", ["sip.example.com", "203.0.113.5", "2001:db8::5", "[2001:db8::5]"])
def test_advertise_takes_a_host(value: str) -> None:
    cfg = load_config(None, env={"SIPWAKE_SIP_ADVERTISE": value})
    assert cfg.sip.advertise == value


@pytest.mark.parametrize("value", ["203.0.113.5:5060", "sip.example.com:5060", "a b", "[::1]:5060"])
def test_advertise_refuses_a_port_or_junk(value: str) -> None:
    with pytest.raises(ConfigError, match="advertise"):
        load_config(None, env={"SIPWAKE_SIP_ADVERTISE": value})


def test_wss_needs_a_certificate() -> None:
    with pytest.raises(ConfigError, match="wss: listener needs"):
        load_config(None, env={"SIPWAKE_SIP_LISTEN": "wss:127.0.0.1:5063"})


# --- a relative SQLite path in a file is the file's -----------------------------------


def test_relative_sqlite_path_in_a_file_is_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc dir"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    path = folder / "sipwake.toml"
    path.write_text('[store]\nurl = "sqlite:///data/sip%20wake.db"\n')
    cfg = load_config("etc dir/sipwake.toml", env={})  # a relative --config too
    assert cfg.store.url == f"sqlite:///{tmp_path}/etc%20dir/data/sip%20wake.db"
    from sipwake.store.sqlite import SQLiteStore

    store = create_store(cfg.store.url)
    assert isinstance(store, SQLiteStore)
    assert store.path == str(folder / "data" / "sip wake.db")


@pytest.mark.parametrize(
    "url",
    ["sqlite:////var/lib/sipwake.db", "postgresql://sip@db/sipwake"],
)
def test_other_store_urls_in_a_file_are_kept(tmp_path: Path, url: str) -> None:
    assert load_config(write(tmp_path, f'[store]\nurl = "{url}"\n'), env={}).store.url == url


def test_relative_sqlite_path_from_env_or_defaults_is_the_working_directorys(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[store]\nurl = "sqlite:///file.db"\n')
    assert load_config(path, env={"SIPWAKE_STORE_URL": "sqlite:///env.db"}).store.url == (
        "sqlite:///env.db"
    )
    assert load_config(None, env={}).store.url == "sqlite:///sipwake.db"
    assert load_config(write(tmp_path, "[sip]\n"), env={}).store.url == "sqlite:///sipwake.db"


# --- numeric ranges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[calls]\npark_timeout = -5\n", "'calls.park_timeout' must be greater than 0, got -5"),
        ("[calls]\npark_timeout = 0\n", "'calls.park_timeout' must be greater than 0, got 0"),
        ("[calls]\nalert_repeat = -1\n", "'calls.alert_repeat' must be at least 0, got -1"),
        ("[calls]\nmax_parked_per_user = 0\n", "'calls.max_parked_per_user' must be at least 1"),
        ("[calls]\nmax_parked_total = -3\n", "'calls.max_parked_total' must be at least 1"),
        ("[sip]\nt2 = -4\n", "'sip.t2' must be greater than 0"),
        ("[sip]\nt4 = 0\n", "'sip.t4' must be greater than 0"),
        ("[sip]\nt1 = 5\nt2 = 4\n", "'sip.t2' (4) must be at least 'sip.t1' (5)"),
        ("[sip]\nnonce_ttl = 0\n", "'sip.nonce_ttl' must be greater than 0"),
        ("[sip]\nmin_expires = 0\n", "'sip.min_expires' must be greater than 0"),
        ("[sip]\nmin_expires = 7200\n", "'sip.default_expires' (3600) must be at least 'sip.min_expires' (7200)"),
        ("[sip]\nmax_expires = 600\n", "'sip.max_expires' (600) must be at least 'sip.default_expires' (3600)"),
        ("[sip]\nmax_message_size = 0\n", "'sip.max_message_size' must be greater than 0"),
        ("[messages]\nmax_body = 0\n", "'messages.max_body' must be greater than 0"),
        ("[messages]\nretention_days = -1\n", "'messages.retention_days' must be at least 0"),
        ("[messages]\ninbox_cap = -1\n", "'messages.inbox_cap' must be at least 0"),
        ("[messages]\nsender_rate = -0.5\n", "'messages.sender_rate' must be at least 0, got -0.5"),
        ("[messages]\nsender_burst = 0\n", "'messages.sender_burst' must be at least 1"),
        ("[messages]\nforward_timeout = 0\n", "'messages.forward_timeout' must be greater than 0"),
        ("[auth]\nmax_failures = -1\n", "'auth.max_failures' must be at least 0, got -1"),
        ("[auth]\nfailure_window = 0\n", "'auth.failure_window' must be greater than 0"),
        ("[auth]\nblock_time = -60\n", "'auth.block_time' must be greater than 0"),
        ("[auth]\ntoken_ttl = 0\n", "'auth.token_ttl' must be greater than 0"),
        ("[calls]\npark_timeout = inf\n", "'calls.park_timeout' must be a finite number, got inf"),
        ("[sip]\nt1 = nan\n", "'sip.t1' must be a finite number, got nan"),
    ],
)
def test_numeric_ranges_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SIPWAKE_CALLS_PARK_TIMEOUT", "-30", "'calls.park_timeout' must be greater than 0"),
        ("SIPWAKE_CALLS_PARK_TIMEOUT", "nan", "SIPWAKE_CALLS_PARK_TIMEOUT='nan': expected a finite"),
        ("SIPWAKE_SIP_T1", "-inf", "SIPWAKE_SIP_T1='-inf': expected a finite number"),
    ],
)
def test_numeric_ranges_from_the_environment(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, env={var: value})


def test_zero_is_allowed_where_it_means_off(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "[calls]\nalert_repeat = 0\n"
            "[messages]\nretention_days = 0\ninbox_cap = 0\nsender_rate = 0\n"
            "[auth]\nmax_failures = 0\n",
        ),
        env={},
    )
    assert cfg.calls.alert_repeat == 0 and cfg.messages.sender_rate == 0
    assert cfg.messages.retention_days == 0 and cfg.messages.inbox_cap == 0
    assert cfg.auth.max_failures == 0


# --- typos name the closest key --------------------------------------------------------


def test_misspelled_env_variable_names_the_closest_key(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "SIPWAKE_SIP_DOMIAN": "x",
        "SIPWAKE_PUSH_APNS_TEAMID": "y",
        "SIPWAKE_CALL_PARK_TIMEOUT": "5",
        "SIPWAKE_HOME": "/x",  # like nothing we know: no guess
        "SIP_DOMIAN": "z",  # not ours: not a word
        "SIPWAKE_PURE_PYTHON": "1",  # ours, not a key (the parser variant): not a word
    }
    with caplog.at_level(logging.WARNING, logger="sipwake.config"):
        cfg = load_config(None, env=env)
    assert cfg.sip.domain == "localhost"
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring unknown environment variable SIPWAKE_SIP_DOMIAN"
        " (did you mean SIPWAKE_SIP_DOMAIN?)",
        "ignoring unknown environment variable SIPWAKE_PUSH_APNS_TEAMID"
        " (did you mean SIPWAKE_PUSH_APNS_TEAM_ID?)",
        "ignoring unknown environment variable SIPWAKE_CALL_PARK_TIMEOUT"
        " (did you mean SIPWAKE_CALLS_PARK_TIMEOUT?)",
        "ignoring unknown environment variable SIPWAKE_HOME",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sip]\ndomian = "x"\n', "unknown key 'sip.domian' (did you mean 'sip.domain'?)"),
        ('[push.gcm]\nproject_id = "x"\n', "unknown section [push.gcm] (did you mean [push.fcm]?)"),
        ('[sipp]\ndomain = "x"\n', "unknown section [sipp] (did you mean [sip]?)"),
        ('[sip]\nflavour = "x"\n', "unknown key 'sip.flavour'"),
    ],
)
def test_unknown_file_key_names_the_closest(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    assert str(exc.value) == message
