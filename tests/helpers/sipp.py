"""SIPp (an independent SIP implementation, apt package sip-tester) run against a node."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path


async def run_sipp(target: tuple[str, int], args: list[str], cwd: Path) -> tuple[int, str]:
    sipp = shutil.which("sipp")
    assert sipp, "SIPp missing: apt-get install sip-tester (the test command does it)"
    proc = await asyncio.create_subprocess_exec(
        sipp, f"{target[0]}:{target[1]}", "-i", "127.0.0.1", "-p", "0",
        "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_err",
        *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")
