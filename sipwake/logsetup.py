"""How the node's log is written: `[log] level`, `[log] format` ("text" or "json")
and `[log] sip_trace`.

JSON lines are for log shippers (Loki, Elasticsearch, journald's JSON export): one
object a line with `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `msg` (the
formatted text, the same words as the text format) and the structured fields a log
call passes as `extra` (`user`, `device`, `transport`, `source`, ...), so a shipper
can index who registered without parsing sentences. A traceback goes in `exc`.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
TRACE_LOGGER = "sipwake.sip.trace"  # the SIP message trace (sip/trace.py)

# A LogRecord's own attributes: everything else on a record came from `extra`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, fmt: str = "text", sip_trace: bool = False) -> None:
    """Apply the configuration to the root logger's handlers (installed by
    `logging.basicConfig` before the configuration was read, so that its own
    warnings are not lost). The SIP trace logs at INFO on its own logger, which
    stays quiet unless `sip_trace` is on, whatever the level."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(formatter(fmt))
    root.setLevel(level)
    trace = logging.getLogger(TRACE_LOGGER)
    # on: heard even under [log] level = WARNING; off: silent even at DEBUG
    trace.setLevel(logging.INFO if sip_trace else logging.CRITICAL + 1)
