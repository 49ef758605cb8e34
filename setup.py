"""The SIP hot path compiled with mypyc, when it can be.

pyproject.toml holds the project; this file only adds the optional extension modules:
the modules listed in sipwake/speedups.py (COMPILED: the parser, transactions, transport,
registrar, calls, admission) compiled with mypyc into C extensions installed beside the
sources (one shared library, sipwake/_speedups__mypyc.*.so, and a stub per module).

- `SIPWAKE_PURE_PYTHON=1 pip install …` builds nothing: pure Python.
- No C compiler (or any other failure to compile): one warning line, and the install goes
  on pure Python. `sipwake version` says which variant runs.
- The .py files are installed too, always: the same install runs pure Python when
  SIPWAKE_PURE_PYTHON=1 is set at run time (sipwake/speedups.py).
- Each build records the hash of the sources it compiled (sipwake/_compiled.json): an
  editable install with a compiled module edited since runs pure Python, with a warning,
  instead of the stale compiled code, until `pip install -e .` rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PACKAGE = "sipwake"
_SPEEDUPS = runpy.run_path(str(HERE / PACKAGE / "speedups.py"))  # stdlib only
COMPILED: tuple[str, ...] = _SPEEDUPS["COMPILED"]  # paths under sipwake/
MANIFEST: str = _SPEEDUPS["MANIFEST"]  # what was compiled: {"sip/message.py": sha256, …}
GROUP = "sipwake._speedups"  # → sipwake/_speedups__mypyc.*.so
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def warn(why: object) -> None:
    print(f"WARNING: sipwake: hot path not compiled, pure Python ({why})", file=sys.stderr)


def source_hashes() -> dict[str, str]:
    return {
        name: hashlib.sha256((HERE / PACKAGE / name).read_bytes()).hexdigest() for name in COMPILED
    }


def pure_requested() -> bool:
    return os.environ.get("SIPWAKE_PURE_PYTHON", "") not in ("", "0")


def forget_compiled() -> None:
    """Remove what an earlier editable build left beside the sources: asked for pure
    Python, an editable install gets pure Python."""
    directory = HERE / PACKAGE
    for stem in (*(name[:-3] for name in COMPILED), GROUP.rpartition(".")[2] + "__mypyc"):
        (directory / (stem + EXT_SUFFIX)).unlink(missing_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for old in ("sip/_parser.json", f"sip/_parser__mypyc{EXT_SUFFIX}"):  # an older build's
        (directory / old).unlink(missing_ok=True)


def build_options() -> list[str]:
    """mypy's options for the build, apart from the project's own (`mypy --strict sipwake`
    in CI checks the types): pip builds in an environment without our dependencies, so
    what the compiled modules import from asyncpg, redis, aiohttp … is typed Any here
    instead of failing the build; errors in modules not compiled are not ours to report
    here; and the cache lives in build/, where the project's mypy never reads it (a cache
    written without the dependencies would fail that check)."""
    config = HERE / "build" / "mypyc.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        "[mypy]\npython_version = 3.11\nignore_missing_imports = True\n"
        "follow_imports = silent\n"
    )
    return ["--config-file", str(config), "--cache-dir", str(HERE / "build" / "mypy-cache")]


def extensions() -> list[Any]:
    if pure_requested():
        forget_compiled()
        return []
    try:
        from mypyc.build import mypycify

        return mypycify(
            [*build_options(), *(f"{PACKAGE}/{name}" for name in COMPILED)],
            group_name=GROUP,
            target_dir="build/mypyc",  # relative: setuptools lists it as a dependency
        )
    except (Exception, SystemExit) as exc:  # mypyc reports its own errors with exit()
        warn(f"mypyc: {exc!r}")
        return []


class OptionalBuildExt(build_ext):
    """Builds the extensions all or none: a failure leaves pure Python."""

    def run(self) -> None:
        try:
            super().run()  # into build_lib, then beside the sources for an editable install
        except Exception as exc:  # no compiler, missing Python headers, …
            warn(exc)
            for ext in self.extensions:  # nothing half-built left behind
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []
            return
        if self.extensions:
            self._write_manifest(Path(self.build_lib) / PACKAGE)
            if self.inplace:
                self._write_manifest(HERE / PACKAGE)

    @staticmethod
    def _write_manifest(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).write_text(json.dumps(source_hashes(), indent=1) + "\n")

    def get_outputs(self) -> list[str]:
        outputs: list[str] = super().get_outputs()
        if self.extensions:
            outputs.append(str(Path(self.build_lib) / PACKAGE / MANIFEST))
        return outputs


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
