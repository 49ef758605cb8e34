#!/usr/bin/env bash
# Installs what the tests need, then runs lint, types and the test suite.
# Needs root (or sudo) for apt-get when SIPp or Chromium is missing.
set -euo pipefail
cd "$(dirname "$0")"

# SIPp (sip-tester) as an independent SIP peer; Debian's Chromium for the admin page's
# browser test (playwright drives /usr/bin/chromium: it downloads no browser of its own)
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m ruff check sipwake tests bench
python3 -m mypy --strict sipwake
python3 -m pytest -q "$@"
