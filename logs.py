"""Logging for every process of the service (web app, worker, media server): JSON lines.

One line per event on stderr (journald keeps it under systemd), with the request id of the
request that caused it: the web app takes it from X-Request-ID (nginx sets it) or makes one,
mints it into the media join token and into the payload of the jobs it enqueues, so that one
id finds a request's lines in all three processes. Like config.py this module is shared by
the media server, which never imports app/.

What goes into a line is chosen by the caller (`extra={"fields": {...}}`): ids, endpoints,
statuses, durations — never a patient's name, phone, e-mail or message text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
# What is kept of a client's X-Request-ID: nginx's $request_id is 32 hex digits; anything
# else that is short and plain is kept too, the rest replaced (a header is attacker input).
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def clean_request_id(value: object) -> str:
    """`value` if it is a plausible request id, else a new one."""
    if isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, request id, its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr, as JSON lines unless LOG_FORMAT=text.

    Left alone when the root logger already has a handler (pytest's, or an embedding host's).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "json").strip().lower() == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
