"""The SIP core. Its parser and serialiser (message.py, uri.py) may run compiled.

An install with a C compiler at hand builds them with mypyc (setup.py) into extension
modules beside the sources, and those are what `import sipwake.sip.message` loads. The
pure-Python sources stay and are loaded instead when
- SIPWAKE_PURE_PYTHON=1 is set (CI runs the suites both ways from one install), or
- the sources were edited after the build (an editable install: `pip install -e .`
  rebuilds), with a warning: stale compiled code never runs silently.
`parser()` says which one runs (`sipwake version` prints it).
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

COMPILED = ("message", "uri")  # what setup.py compiles
_MANIFEST = "_parser.json"  # the hashes of the sources it compiled


def _compiled_here(directory: str) -> bool:
    return any(
        os.path.exists(os.path.join(directory, COMPILED[0] + suffix))
        for suffix in EXTENSION_SUFFIXES
    )


def _stale(directory: str) -> list[str]:
    """The compiled modules whose source is not the one they were built from."""
    try:
        with open(os.path.join(directory, _MANIFEST), encoding="utf-8") as f:
            built = json.load(f)
    except (OSError, ValueError):
        return list(COMPILED)
    stale = []
    for name in COMPILED:
        try:
            with open(os.path.join(directory, name + ".py"), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue  # installed without its source: nothing to compare with
        if built.get(name + ".py") != digest:
            stale.append(name)
    return stale


def _pure_only(directory: str) -> None:
    """Modules of this package load from .py (or .pyc) files only from now on."""
    sys.path_importer_cache[directory] = FileFinder(
        directory,
        (SourceFileLoader, SOURCE_SUFFIXES),
        (SourcelessFileLoader, BYTECODE_SUFFIXES),
    )


_why_pure = ""
if os.environ.get("SIPWAKE_PURE_PYTHON", "") not in ("", "0"):
    _why_pure = "SIPWAKE_PURE_PYTHON"
for _directory in __path__:
    if not _compiled_here(_directory):
        _why_pure = _why_pure or "not compiled"
        continue
    if not _why_pure:
        _stale_modules = _stale(_directory)
        if _stale_modules:
            _why_pure = "compiled parser out of date"
            warnings.warn(
                f"sipwake: {', '.join(m + '.py' for m in _stale_modules)} changed since the "
                f"parser was compiled: running pure Python (rebuild: pip install -e .)",
                RuntimeWarning,
                stacklevel=2,
            )
    if _why_pure:
        _pure_only(_directory)


def parser() -> str:
    """Which SIP parser runs: "compiled (mypyc)" or "pure Python (why)"."""
    from sipwake.sip import message, uri

    files = (message.__file__ or "", uri.__file__ or "")
    if all(f.endswith(tuple(EXTENSION_SUFFIXES)) for f in files):
        return "compiled (mypyc)"
    return f"pure Python ({_why_pure or 'not compiled'})"
