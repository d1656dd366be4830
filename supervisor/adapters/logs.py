"""Log output: plain text for people, or one JSON object per line (LOG_FORMAT=json) for log pipelines.

Every JSON line has the same keys: time, level, source (the supervisor's module, or "keepalived" for keepalived's
own lines), event (the message), and instance, container and reason when the call passed them as `extra`.
Values are whatever the caller logged; no secret is ever passed to a logger (settings keep AUTH_PASS in a Secret).
"""

from __future__ import annotations

import json
import logging
import sys
import time

EXTRA_KEYS = ("instance", "container", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "source": record.name.removeprefix("supervisor."),
            "event": record.getMessage(),
        }
        for key in EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Route every logger to stderr in the chosen format (replacing any earlier configuration)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
