"""The Dockerfile, docker-compose.yml and the systemd unit say what pyproject.toml and the
configuration say: the console script and how it is started, the Python version, the
extras, the files copied, the SIPWAKE_* variables (each a real key), the exposed ports,
the health endpoint, the stop timeout above the graceful stop. CI has no Docker: these
are read as text, and `docker build` is tried where Docker runs (docs/operations.md)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from sipwake.config import Config, parse_host_port, parse_listen
from tests.helpers.configs import schema_keys

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STOP_WITHIN = 10  # seconds: DESIGN's graceful stop


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [rest for instruction, rest in dockerfile() if instruction == name]


def env_names() -> set[str]:
    """Every SIPWAKE_* variable the configuration knows."""
    return {"SIPWAKE_" + key.replace(".", "_").upper() for key in schema_keys(Config())}


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions("ENV"):
        for word in shlex.split(rest):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_the_image_is_python_of_requires_python() -> None:
    required = SpecifierSet(PYPROJECT["project"]["requires-python"])
    images = instructions("FROM")
    assert images
    for image in images:
        m = re.fullmatch(r"python:(\d+\.\d+)-slim(?: AS \w+)?", image, re.I)
        assert m, image
        assert m.group(1) + ".0" in required, image


def test_it_installs_the_project_with_known_extras_and_not_the_tests() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    installs = [r for r in instructions("RUN") if "pip install" in r]
    assert installs
    for run in installs:
        targets = re.findall(r"pip install [^&]*?(\.(?:\[[^\]]*\])?)(?:\s|$)", run)
        assert targets, run  # it installs the project itself, `.`
        for target in targets:
            wanted = set(filter(None, target[2:-1].split(","))) if "[" in target else set()
            assert wanted <= extras, target
            assert "test" not in wanted  # no test tools in the image


def test_it_runs_the_console_script_as_a_non_root_user() -> None:
    (script,) = PYPROJECT["project"]["scripts"]
    assert PYPROJECT["project"]["scripts"][script] == "sipwake.cli:main"
    (entrypoint,) = instructions("ENTRYPOINT")
    (cmd,) = instructions("CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == [
        script, "serve", "--config", "/etc/sipwake/sipwake.toml"
    ]
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    assert "STOPSIGNAL" not in dict(dockerfile()) or instructions("STOPSIGNAL") == ["SIGTERM"]


def test_what_it_copies_exists_and_its_config_loads() -> None:
    for rest in instructions("COPY"):
        if rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    assert "COPY sipwake.example.toml /etc/sipwake/sipwake.toml" in (
        ROOT / "Dockerfile"
    ).read_text()


def test_the_image_has_the_compiled_parser() -> None:
    """setup.py (mypyc) needs a C compiler: the build stage has one, and the build fails
    rather than ship the pure-Python parser unnoticed."""
    _comment, build, image = (ROOT / "Dockerfile").read_text().split("\nFROM ")
    assert " AS build" in build.partition("\n")[0]
    assert "COPY pyproject.toml setup.py " in build
    assert re.search(r"apt-get install [^&]*\bgcc\b", build)
    assert 'sipwake version | grep -qx "parser: compiled (mypyc)"' in build
    assert "gcc" not in image  # the image itself: no compiler


def test_its_variables_are_config_keys_and_its_ports_are_exposed() -> None:
    env = {k: v for k, v in dockerfile_env().items() if k.startswith("SIPWAKE_")}
    assert set(env) <= env_names()
    exposed = set(" ".join(instructions("EXPOSE")).split())
    for spec in env["SIPWAKE_SIP_LISTEN"].split(","):
        listen = parse_listen(spec)
        assert listen.host == "0.0.0.0"
        proto = "udp" if listen.transport == "udp" else "tcp"
        assert f"{listen.port}/{proto}" in exposed
    host, port = parse_host_port(env["SIPWAKE_HTTP_LISTEN"])
    assert host == "0.0.0.0" and f"{port}/tcp" in exposed
    assert env["SIPWAKE_STORE_URL"].startswith("sqlite:////var/lib/sipwake/")
    assert "/var/lib/sipwake" in " ".join(instructions("VOLUME"))


def test_the_health_check_asks_the_health_endpoint() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert "/healthz" in check and "SIPWAKE_HTTP_LISTEN" in check
    assert 'add_get("/healthz"' in (ROOT / "sipwake/api/http.py").read_text()


def test_compose_runs_sipwake_postgres_and_redis_with_real_keys() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"sipwake", "postgres", "redis"}
    sipwake = services["sipwake"]
    assert sipwake["build"] == "."
    env = sipwake["environment"]
    assert set(env) <= env_names()
    assert env["SIPWAKE_STORE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["SIPWAKE_STORE_URL"]
    assert env["SIPWAKE_CLUSTER_REDIS_URL"] == "redis://redis:6379/0"
    assert "SIPWAKE_SIP_SECRET" in env
    assert set(sipwake["depends_on"]) == {"postgres", "redis"}
    grace = int(sipwake["stop_grace_period"].rstrip("s"))
    assert grace > STOP_WITHIN


def test_the_three_node_cluster_compose() -> None:
    """docs/cluster/docker-compose.yml: three nodes, one secret, store and bus each."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docs/cluster/docker-compose.yml").read_text())
    nodes = {k: v for k, v in compose["services"].items() if k.startswith("node")}
    assert len(nodes) == 3 and {"postgres", "redis"} <= set(compose["services"])
    envs = [n["environment"] for n in nodes.values()]
    for env in envs:
        assert set(env) <= env_names()
        assert env["SIPWAKE_STORE_URL"].startswith("postgresql://")
        assert env["SIPWAKE_CLUSTER_REDIS_URL"].startswith("redis://")
    assert len({e["SIPWAKE_SIP_SECRET"] for e in envs}) == 1
    assert len({e["SIPWAKE_SIP_ADVERTISE"] for e in envs}) == 3
    for node in nodes.values():
        assert int(node["stop_grace_period"].rstrip("s")) > STOP_WITHIN


def test_the_systemd_unit() -> None:
    unit: dict[str, list[str]] = {}
    for line in (ROOT / "contrib/sipwake.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            unit.setdefault(key.strip(), []).append(value.strip())
    (exec_start,) = unit["ExecStart"]
    (script,) = PYPROJECT["project"]["scripts"]
    assert shlex.split(exec_start)[1:] == ["serve", "--config", "/etc/sipwake/sipwake.toml"]
    assert shlex.split(exec_start)[0].endswith("/" + script)
    assert unit.get("DynamicUser") == ["yes"] or unit.get("User") not in (None, ["root"])
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["sipwake"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert int(unit["TimeoutStopSec"][0].rstrip("s")) > STOP_WITHIN
    assert int(unit["LimitNOFILE"][0]) >= 10_000 + 256  # [sip] max_connections fits


def test_license() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
