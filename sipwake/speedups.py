"""The SIP hot path may run compiled: which modules, and whether they do.

An install with a C compiler at hand builds COMPILED with mypyc (setup.py) into extension
modules beside their sources, and those are what `import sipwake.sip.message` loads:
about half the CPU of a REGISTER or a call is Python's own overhead in these modules
(bench/parser.py, bench/vs_kamailio.py). The pure-Python sources stay, and are loaded
instead when
- SIPWAKE_PURE_PYTHON=1 is set (CI runs the suites both ways from one install), or
- a source was edited after the build (an editable install: `pip install -e .`
  rebuilds), with a warning: stale compiled code never runs silently.
sipwake/__init__.py calls choose() before any of them is imported; running() says which
variant runs (`sipwake version` prints it). Only the standard library here: setup.py
reads COMPILED from this file without importing the package.

Dataclasses in COMPILED modules that are made per message or per call declare
`init=False` and write their `__init__` out: the one `@dataclass` generates is
interpreted code even there, 0.3 µs a object (0.8 µs frozen) where a written one,
compiled, takes 0.04 µs; together they were ~10 % of a proxied call's CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)

# paths under sipwake/: the SIP hot path (parser, transactions, transport, registrar,
# calls, admission). Their imports that mypyc can't see in pip's isolated build (asyncpg,
# redis, …) are typed Any there (setup.py): the compiled code treats them as objects.
COMPILED = (
    "sip/message.py", "sip/uri.py", "sip/digest.py", "sip/transaction.py",
    "sip/transport.py", "sip/peer.py", "sip/proxy.py", "sip/guard.py", "sip/uac.py",
    "sip/timer_slots.py",
    "router.py", "timeline.py", "ratelimit.py",
    "registrar/registrar.py", "registrar/pn.py",
    "calls/service.py", "calls/dialogs.py", "calls/call.py",
    "auth/admission.py", "auth/users.py", "auth/throttle.py",
)  # fmt: skip
MANIFEST = "_compiled.json"  # beside this file: {path: sha256 of the source compiled}
HERE = os.path.dirname(os.path.abspath(__file__))

why_pure = ""  # set by choose(): "" when the compiled modules run


def _compiled_here() -> bool:
    stem = os.path.join(HERE, COMPILED[0][:-3])
    return any(os.path.exists(stem + suffix) for suffix in EXTENSION_SUFFIXES)


def _stale() -> list[str]:
    """The compiled modules whose source is not the one they were built from."""
    try:
        with open(os.path.join(HERE, MANIFEST), encoding="utf-8") as f:
            built = json.load(f)
    except (OSError, ValueError):
        return list(COMPILED)
    stale = []
    for path in COMPILED:
        try:
            with open(os.path.join(HERE, path), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue  # installed without its source: nothing to compare with
        if built.get(path) != digest:
            stale.append(path)
    return stale


def _pure_only(directory: str) -> None:
    """Modules of that directory load from .py (or .pyc) files only from now on."""
    sys.path_importer_cache[directory] = FileFinder(
        directory,
        (SourceFileLoader, SOURCE_SUFFIXES),
        (SourcelessFileLoader, BYTECODE_SUFFIXES),
    )


def choose(roots: list[str]) -> None:
    """`roots`: the sipwake package's __path__, as the import system joins it."""
    global why_pure
    if os.environ.get("SIPWAKE_PURE_PYTHON", "") not in ("", "0"):
        why_pure = "SIPWAKE_PURE_PYTHON"
    elif not _compiled_here():
        why_pure = "not compiled"
        return
    else:
        stale = _stale()
        if not stale:
            return
        why_pure = "compiled code out of date"
        warnings.warn(
            f"sipwake: {', '.join(stale)} changed since compiled: running pure Python "
            f"(rebuild: pip install -e .)",
            RuntimeWarning,
            stacklevel=3,
        )
    for root in roots:
        for sub in sorted({os.path.dirname(p) for p in COMPILED}):
            _pure_only(os.path.join(root, sub) if sub else root)


def running() -> str:
    """Which variant runs: "compiled (mypyc)" or "pure Python (why)"."""
    import importlib

    files = [importlib.import_module("sipwake." + p[:-3].replace("/", ".")).__file__ or ""
             for p in COMPILED]  # fmt: skip
    if all(f.endswith(tuple(EXTENSION_SUFFIXES)) for f in files):
        return "compiled (mypyc)"
    return f"pure Python ({why_pure or 'not compiled'})"
