"""Who may import whom inside sipwake/ (docs/architecture.md, "Layers"): data flows one
way, wire → SIP core → services → store and push; nothing below imports what is above
it, the services don't import each other, and only cli.py imports server.py (the one
place that wires the node together). Every import counts, TYPE_CHECKING ones too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "sipwake"
TESTS = ROOT.parent / "tests"

FOUNDATIONS = {"config", "ids", "timing", "lograte", "logsetup", "ratelimit", "metrics",
               "timeline", "speedups", "heap"}
SERVICE = FOUNDATIONS | {"auth", "badge", "push", "registrar", "sip", "store", "tasks"}

# package (or top-level module) → what it may import besides itself
ALLOWED: dict[str, set[str]] = {
    **{name: set() for name in FOUNDATIONS},
    "store": {"lograte"},
    "sip": {"ids", "timing", "lograte", "speedups"},
    "tasks": {"store"},
    "push": {"ids", "lograte", "store", "timeline", "timing"},
    "auth": {"ids", "lograte", "sip", "store", "timing"},
    "badge": {"store"},
    "router": {"lograte", "sip", "store", "tasks"},
    "retention": {"store"},
    "collector": {"timing"},
    "testing": set(),
    "registrar": {"auth", "ids", "lograte", "push", "sip", "store", "timeline", "timing"},
    "calls": SERVICE,
    "messages": SERVICE,
    "voicemail": SERVICE | {"router"},
    # a service of its own: relays requests between nodes, shares the registrar's view
    "cluster": SERVICE,
    "push_setup": {"config", "push"},
    "api": FOUNDATIONS | {"auth", "push", "store", "messages", "voicemail"},
    "server": {"*"},
    "demo": FOUNDATIONS | {"sip", "store"},  # simulated apps: a node is handed to it
    "workers": {"config"},
    "provision": {"sip", "store"},
    "progress": set(),
    "cli": {"config", "demo", "logsetup", "server", "sip", "store", "workers", "push", "push_setup",
            "provision",
            "progress"},
}


def _unit(module: str) -> str | None:
    """The package or top-level module of sipwake that `module` names."""
    parts = module.split(".")
    if parts[0] != "sipwake" or len(parts) == 1:
        return None
    return parts[1]


def _modules(path: Path) -> list[str]:
    """Every module `path` imports (absolute names; TYPE_CHECKING and in-function too)."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return modules


def _imports() -> dict[str, dict[str, list[str]]]:
    """unit → imported unit → the files that import it."""
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        unit = rel.parts[0].removesuffix(".py")
        for module in _modules(path):
            target = _unit(module)
            if target is not None and target != unit:
                found.setdefault(unit, {}).setdefault(target, []).append(str(rel))
    return found


def test_every_unit_is_in_the_table() -> None:
    units = {p.name.removesuffix(".py") for p in ROOT.iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}  # fmt: skip
    assert units - {"__init__"} == set(ALLOWED), "add the new package to ALLOWED and the docs"


def test_no_import_goes_against_the_layers() -> None:
    wrong = []
    for unit, targets in _imports().items():
        allowed = ALLOWED[unit]
        for target, files in targets.items():
            if "*" not in allowed and target not in allowed:
                wrong.append(f"{unit} -> {target} ({', '.join(sorted(set(files)))})")
    assert wrong == []


def test_only_cli_imports_the_server() -> None:
    importers = {u for u, targets in _imports().items() if "server" in targets}
    assert importers <= {"cli"}


def test_tests_share_code_through_helpers_only() -> None:
    """What tests share lives in tests/helpers/ (and tests/served.py): no module under
    tests/ or bench/ imports a test module, and no test module imports a conftest (its
    fixtures reach the tests without an import)."""
    wrong = []
    for path in sorted([*TESTS.rglob("*.py"), *(ROOT.parent / "bench").rglob("*.py")]):
        for module in _modules(path):
            first, _, _ = module.partition(".")
            last = module.rsplit(".", 1)[-1]
            if first != "tests" and "." in module:
                continue  # another package's (aiohttp.test_utils)
            if last.startswith("test_") or (path.name.startswith("test_") and last == "conftest"):
                wrong.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert wrong == []
