"""[log] format and sip_trace: JSON lines carry ts, level, logger, msg and the extras;
the configuration is checked at load."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipwake import logsetup
from sipwake.config import ConfigError, load_config
from tests.helpers.agent import Agent
from tests.served import DOMAIN, serve


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """The root logger writing to a string, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    trace = logging.getLogger(logsetup.TRACE_LOGGER)
    saved_trace = trace.level
    stream = io.StringIO()
    root.handlers[:] = [logging.StreamHandler(stream)]
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    trace.setLevel(saved_trace)


def test_json_lines(root_stream: io.StringIO) -> None:
    logsetup.configure("INFO", "json")
    log = logging.getLogger("sipwake.registrar")
    log.info("binding new: %s", "sip:alice@example.com", extra={"user": "sip:alice@example.com",
                                                                "transport": "tcp"})
    log.debug("not at INFO")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    lines = [json.loads(line) for line in root_stream.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "INFO" and first["logger"] == "sipwake.registrar"
    assert first["msg"] == "binding new: sip:alice@example.com"
    assert first["user"] == "sip:alice@example.com" and first["transport"] == "tcp"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert set(first) == {"ts", "level", "logger", "msg", "user", "transport"}
    assert lines[1]["level"] == "ERROR" and "ValueError: boom" in lines[1]["exc"]


def test_text_format_is_the_default(root_stream: io.StringIO) -> None:
    logsetup.configure("DEBUG")
    logging.getLogger("sipwake.x").debug("hello %d", 1, extra={"user": "u"})
    line = root_stream.getvalue().strip()
    assert line.endswith("DEBUG sipwake.x: hello 1")


@pytest.mark.parametrize("trace", [False, True])
def test_sip_trace_logger_follows_the_switch_not_the_level(
    root_stream: io.StringIO, trace: bool
) -> None:
    logsetup.configure("WARNING", "text", sip_trace=trace)
    logging.getLogger(logsetup.TRACE_LOGGER).info("in udp 127.0.0.1:5060 OPTIONS")
    logging.getLogger("sipwake.registrar").info("not at WARNING")
    assert ("OPTIONS" in root_stream.getvalue()) is trace
    assert "not at WARNING" not in root_stream.getvalue()
    logsetup.configure("DEBUG", "text", sip_trace=False)
    logging.getLogger(logsetup.TRACE_LOGGER).debug("off even at DEBUG")
    assert "off even at DEBUG" not in root_stream.getvalue()


def test_config_keys(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    assert (cfg.log.format, cfg.log.sip_trace) == ("text", False)
    cfg = load_config(None, env={"SIPWAKE_LOG_FORMAT": "JSON", "SIPWAKE_LOG_SIP_TRACE": "yes"})
    assert (cfg.log.format, cfg.log.sip_trace) == ("json", True)
    with pytest.raises(ConfigError, match=r"'log\.format' must be one of text, json"):
        load_config(None, env={"SIPWAKE_LOG_FORMAT": "xml"})
    path = tmp_path / "sipwake.toml"
    path.write_text('[log]\nsip_trace = "on"\n')
    with pytest.raises(ConfigError, match=r"'log\.sip_trace' must be a boolean"):
        load_config(str(path), env={})


async def test_sipwake_serve_writes_json_lines_with_the_trace(tmp_path: Path) -> None:
    """The installed command: every line of its log is a JSON object; a registration
    is a line with its fields; the trace shows the REGISTER without the password's
    digest or the push token."""
    token = "e5" * 32
    toml = (f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0"]\n'
            '[http]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\nsip_trace = true\n')  # fmt: skip
    served = await serve(tmp_path, toml)
    try:
        phone = await Agent("alice", "secret", DOMAIN, served.sip["udp"]).start()
        params = f";pn-provider=apns;pn-prid={token};pn-param=ABCD123456.com.example.dialer.voip"
        assert (await phone.register(params=params)).status == 200
        phone.close()
        await served.wait_log(r'"msg": "binding new')
    finally:
        assert await served.stop() == 0
    lines = [json.loads(line) for line in served.log if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    (bound,) = [line for line in lines if line["msg"].startswith("binding new")]
    assert bound["user"] == f"sip:alice@{DOMAIN}" and bound["transport"] == "udp"
    traced = [line for line in lines if line["logger"] == "sipwake.sip.trace"]
    assert [(t["direction"], t["first_line"].split(" ")[0]) for t in traced] == [
        ("in", "REGISTER"), ("out", "SIP/2.0"), ("in", "REGISTER"), ("out", "SIP/2.0"),
    ]
    assert token not in "\n".join(served.log) and "response=" not in "\n".join(served.log)
