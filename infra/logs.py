"""Logging helpers: a filter that keeps credentials out of every log record."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["RedactingFilter", "install_redaction", "redact_options", "redact_text"]

_SECRET_KEYS = re.compile(r"(secret|token|password|passwd|credential|session|key)", re.I)
_INLINE = re.compile(
    r"(?i)((?:aws_)?(?:secret(?:_access)?_key|session_token|token|password|key)\s*[=:]\s*)"
    r"(['\"]?)[^\s'\",}]+"
)
_URL_USERINFO = re.compile(r"(\w+://)([^/@\s:]+):([^/@\s]+)@")


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options safe to print: secret-looking values replaced."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            out[key] = redact_options(value)
        elif _SECRET_KEYS.search(str(key)) and key not in {"key_prefix"}:
            out[key] = "***"
        else:
            out[key] = value
    return out


def redact_text(text: str) -> str:
    text = _URL_USERINFO.sub(r"\1\2:***@", text)
    return _INLINE.sub(r"\1\2***", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets masked (access keys, tokens, URL passwords)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the redaction filter to every handler of ``logger`` (root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
