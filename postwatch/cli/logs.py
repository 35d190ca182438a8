"""Where the command's log lines go (stderr) and how they read: text, or one JSON object a line."""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record about a source carries a "source" field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "source", None):         # set through `extra=` by log calls about a source
            entry["source"] = record.source
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(fmt: str, verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("postwatch").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    # Scrapy and Twisted are loud at INFO; their problems reach us through the crawl report.
    for noisy in ("scrapy", "twisted", "apscheduler", "filelock", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)
    handler.addFilter(_one_line_database_errors)


def _one_line_database_errors(record: logging.LogRecord) -> bool:
    """APScheduler logs a failed poll of its job store with SQLAlchemy's multi-line message
    (the database may come back; it retries): keep it to one line like every other."""
    if record.name.startswith("apscheduler") and not record.exc_info:
        message = record.getMessage()
        if "\n" in message:
            message = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", message)
            record.msg, record.args = " ".join(line.strip() for line in message.splitlines() if line.strip()), ()
    return True
