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
# compiles the hot path with mypyc (setup.py, sipwake/speedups.py) when a C compiler is there
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m ruff check sipwake tests bench setup.py
python3 -m mypy --strict sipwake

parser=$(python3 -c 'from sipwake import sip; print(sip.parser())')
echo "parser: $parser"
if [[ $parser != compiled* && -z ${SIPWAKE_PURE_PYTHON:-} ]] && command -v cc >/dev/null; then
  echo "the hot path did not compile (pip install -v -e . says why)" >&2
  exit 1
fi
status=0
python3 -m pytest -q "$@" || status=$?

# Then the same install on the hot path's pure-Python source (SIPWAKE_PURE_PYTHON=1, which the
# servers the tests start inherit): the tests given, or the parser's and SIP's own and every
# end-to-end one (a real server, SIPp, pjsua2, the browser, the cluster)
if [[ $parser == compiled* ]]; then
  pure=("$@")
  if [ $# -eq 0 ]; then
    pure=(tests/test_message.py tests/test_rfc4475.py tests/test_malformed.py
          tests/test_addresses.py tests/test_parser_variant.py tests/test_transaction.py
          tests/test_digest.py tests/test_guard.py tests/test_security.py tests/test_timer_slots.py
          tests/test_sip_trace.py tests/test_websocket.py tests/test_one_token.py
          tests/test_transport_send.py
          tests/test_ice.py tests/test_registrar.py tests/test_calls.py tests/test_messages.py
          tests/test_voicemail.py tests/test_e2e_serve.py tests/test_serve.py
          tests/test_stop.py tests/test_sipp.py tests/test_calls_sipp.py tests/test_pjsua2.py
          tests/test_admin_browser.py tests/test_messages_crash.py tests/test_demo.py
          tests/test_cluster.py tests/test_registrar_store.py tests/test_router_eager.py
          tests/test_timeline.py tests/test_calls_unit.py tests/test_inbox_unit.py
          tests/test_tasks.py tests/test_call_log_writer.py tests/store/test_user_changes.py)
  fi
  echo "parser: pure Python (SIPWAKE_PURE_PYTHON=1)"
  SIPWAKE_PURE_PYTHON=1 python3 -m pytest -q "${pure[@]}" || status=$?
fi
exit $status
