"""The documents show what the code does: every push payload in docs/app-integration.md
is what the payload builders make for its inputs (tests/helpers/push_examples.py), and the
documents README links to exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers.push_examples import EXAMPLES, blocks, example

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "docs" / "app-integration.md"
FIX = "python -m tests.helpers.push_examples docs/app-integration.md"


def test_every_payload_in_the_app_guide_is_what_the_builders_make() -> None:
    found = blocks(APP.read_text())
    assert [name for name, _ in found] == list(EXAMPLES), "one block per example, in order"
    for name, text in found:
        assert json.loads(text) == example(name), f"{name}: run `{FIX}`"


def test_every_payload_type_has_an_example_on_both_platforms() -> None:
    kinds = {"call", "call_cancelled", "missed_call", "message", "voicemail", "test"}
    for provider in ("apns", "fcm"):
        shown = {example(n).get("payload", example(n)).get("type")
                 for n in EXAMPLES if n.startswith(provider) and n != "fcm call message"}
        assert shown == kinds, provider


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/|contrib/)?[\w./-]+\.(?:md|toml|service|yml))\)", readme)
    assert "docs/app-integration.md" in links and "docs/operations.md" in links
    for link in links:
        assert (ROOT / link).exists(), link
