"""Structured logs of the node: one JSON object a line, with the event's fields.

Log calls pass their fields in ``extra`` (``event``, ``series_uid``, ``timings`` ...); the JSON
formatter writes them next to the time, level, logger and message. Nothing the node logs holds
patient data: series are named by their UIDs only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys

#: Attributes every LogRecord has; anything else on a record is an event field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object (time in UTC, ISO 8601)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        entry = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(log_format: str = "json", verbose: bool = False) -> None:
    """Send the node's logs to standard error, as JSON lines or plain text.

    Parameters
    ----------
    log_format : {"json", "text"}
        Line format.
    verbose : bool
        Also debug messages (and pynetdicom's informational ones).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # pynetdicom logs every association at INFO, and whole datasets at DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.INFO if verbose else logging.WARNING)
