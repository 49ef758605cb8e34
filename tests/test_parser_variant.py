"""The SIP parser runs compiled (mypyc, setup.py) when it was built, pure Python when
SIPWAKE_PURE_PYTHON=1 says so or when the compiled code is older than its source; the
end-to-end tests' servers run the variant the suite runs (./test.sh runs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from sipwake import sip
from tests.served import run_sipwake

PACKAGE = Path(sip.__file__).parent
COMPILED = any((PACKAGE / f"message{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
needs_compiled = pytest.mark.skipif(not COMPILED, reason="the parser is not compiled here")

SHOW = (
    "from sipwake import sip; from sipwake.sip import message, uri; "
    "print(sip.parser()); print(message.__file__); print(uri.__file__)"
)


def run(code: str, pure: bool | None, cwd: Path | None = None, path: str = "") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "SIPWAKE_PURE_PYTHON"}
    if pure is not None:
        env["SIPWAKE_PURE_PYTHON"] = "1" if pure else "0"
    if path:
        env["PYTHONPATH"] = path
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd or PACKAGE.parent.parent,
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [*done.stdout.splitlines(), *done.stderr.splitlines()]


@pytest.mark.parametrize("pure", [None, False])
def test_without_the_variable_the_compiled_parser_runs_when_built(pure: bool | None) -> None:
    variant, message, uri = run(SHOW, pure)[:3]
    if COMPILED:
        assert variant == "compiled (mypyc)"
        assert message.endswith(tuple(EXTENSION_SUFFIXES))
        assert uri.endswith(tuple(EXTENSION_SUFFIXES))
    else:
        assert variant == "pure Python (not compiled)"
        assert message.endswith("message.py")


def test_the_variable_runs_the_pure_python_parser() -> None:
    variant, message, uri = run(SHOW, pure=True)[:3]
    assert variant == "pure Python (SIPWAKE_PURE_PYTHON)"
    assert message.endswith("message.py") and uri.endswith("uri.py")


def test_both_parse_and_write_the_same() -> None:
    code = (
        "from sipwake.sip.message import parse, make_response\n"
        "m = parse(b'REGISTER sip:example.com SIP/2.0\\r\\nv: SIP/2.0/UDP h:5062;branch=z9hG4bK1;"
        "rport\\r\\nf: <sip:a@example.com>;tag=1\\r\\nt: <sip:a@example.com>\\r\\ni: c\\r\\n"
        "CSeq: 2 REGISTER\\r\\nm: <sip:a@h:5062;pn-provider=apns>;+sip.instance=\"<u>\"\\r\\n"
        "l: 0\\r\\n\\r\\n')\n"
        "print(m.to_bytes()); print(m.contacts); print(make_response(m, 200, to_tag='x').to_bytes())"
    )
    assert run(code, pure=True) == run(code, pure=False)


async def test_the_served_console_script_runs_the_variant_of_the_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end-to-end tests start `sipwake` with the suite's SIPWAKE_PURE_PYTHON: their
    other SIPWAKE_* variables are cleared, not this one."""
    monkeypatch.setenv("SIPWAKE_PURE_PYTHON", "1")
    code, out = await run_sipwake("version", cwd=tmp_path)
    assert code == 0 and out.splitlines()[1] == "parser: pure Python (SIPWAKE_PURE_PYTHON)"
    assert "unknown environment variable" not in out
    monkeypatch.delenv("SIPWAKE_PURE_PYTHON")
    code, out = await run_sipwake("version", cwd=tmp_path)
    assert out.splitlines()[1] == (
        "parser: compiled (mypyc)" if COMPILED else "parser: pure Python (not compiled)"
    )


@needs_compiled
def test_a_source_edited_after_the_build_runs_pure_with_a_warning(tmp_path: Path) -> None:
    """An editable install whose message.py changed never runs the stale compiled code."""
    copy = tmp_path / "sipwake"
    shutil.copytree(PACKAGE.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    variant, message = run(SHOW, pure=None, cwd=tmp_path, path=str(tmp_path))[:2]
    assert variant == "compiled (mypyc)" and message.startswith(str(copy))
    with (copy / "sip" / "message.py").open("a") as f:
        f.write("\n# edited\n")
    lines = run(SHOW, pure=None, cwd=tmp_path, path=str(tmp_path))
    assert lines[:2] == ["pure Python (compiled code out of date)", str(copy / "sip" / "message.py")]
    (warning,) = [line for line in lines if "RuntimeWarning" in line]
    assert "sip/message.py changed since compiled" in warning
    assert "pip install -e ." in warning
