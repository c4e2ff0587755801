"""Structured logs (structlog) that never contain a secret.

A redaction processor masks any event field whose name looks like a credential, whatever the caller
passed, so a careless ``log.info("x", client_secret=...)`` still prints only a prefix; in the other fields it
masks our keys and the credentials of URLs (:mod:`cohortflow.redact`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from cohortflow.redact import is_secret_name, redact_urls

_KEY_LIKE = re.compile(r"\b(cf(?:rest|app|partner|dik|op))_[A-Za-z0-9_-]{8,}")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return (value[:4] + "…") if len(value) > 4 else "…"
    return "…"


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event_dict):
        if name != "event" and is_secret_name(name):
            event_dict[name] = _mask(event_dict[name])
        elif isinstance(event_dict[name], str):
            event_dict[name] = redact_urls(_KEY_LIKE.sub(lambda m: m.group(1) + "_…", event_dict[name]))
    return event_dict


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    logging.getLogger().setLevel(level.upper())
    # aiosmtpd logs every SMTP command, httpx and httpcore every request, at INFO or DEBUG: a run of thousands of
    # requests would flood the terminal. Only their warnings matter; the run records and the debugger have the rest.
    for noisy in ("mail.log", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
