"""Logging helpers: a filter that keeps credentials out of every log record."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["RedactingFilter", "install_redaction", "redact_options", "redact_text"]

_SECRET_KEYS = re.compile(r"(secret|token|password|passwd|credential|session|key)", re.I)
_MASK = "***"
# Each pattern keeps its group 1 (the name) and masks what follows. Formats covered:
# botocore request reprs and canonical requests (X-Amz-Security-Token headers,
# ``Authorization: AWS4-HMAC-SHA256 Credential=<key id>/..., Signature=<hex>``, the
# ``Signature:`` debug line), presigned / signed URL queries (X-Amz-Credential,
# X-Amz-Signature, X-Goog-Signature, X-Goog-Credential, Azure ``sig=``), bearer tokens
# (gcsfs, Ray token auth), OAuth fields (access/refresh tokens, client secrets), quoted
# keys in dict reprs (``'secret': 'x'``), ``name=value`` pairs, and URL passwords.
_PATTERNS = [
    re.compile(
        r"(?i)(['\"]?(?:x-amz-security-token|x-amz-credential|x-amz-signature|"
        r"x-goog-signature|x-goog-credential|x-goog-security-token|"
        r"x-ray-auth-token|authorization|proxy-authorization)['\"]?\s*[:=]\s*(?-i:b)?['\"]?)"
        r"(?:bearer\s+|basic\s+)?[^'\"\s&,}>]+"
    ),
    re.compile(r"(?i)(\bCredential=)[^/\s,'\"&]+"),
    re.compile(r"(?i)(\bSignature\s*[=:]\s*)[0-9a-z%+/=_-]{16,}"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)([?&](?:sig|signature|token|access_token|x-amz-signature|x-goog-signature)=)"
        r"[^&\s'\"]+"
    ),
    re.compile(
        r"(?i)(['\"](?:aws_)?(?:secret(?:_access)?_key|secret|session_token|token|"
        r"access_token|refresh_token|id_token|client_secret|password|passwd|key|"
        r"access_key|access_key_id|aws_access_key_id|private_key|private_key_id)"
        r"['\"]\s*:\s*(?-i:b)?['\"])[^'\"]*"
    ),
    re.compile(
        r"(?i)((?:aws_)?(?:secret(?:_access)?_key|session_token|security_token|"
        r"access_token|refresh_token|client_secret|token|password|key|access_key_id)"
        r"\s*[=:]\s*)(['\"]?)[^\s'\",}&]+"
    ),
    re.compile(r"()\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}\b"),  # AWS key ids
    re.compile(r"()\bya29\.[A-Za-z0-9._-]{10,}"),  # Google OAuth access tokens
]
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
    """``text`` with every credential format above masked."""
    text = _URL_USERINFO.sub(r"\1\2:***@", text)
    for pattern in _PATTERNS:
        text = pattern.sub(_keep_name, text)
    return text


def _keep_name(match: re.Match[str]) -> str:
    kept = "".join(g or "" for g in match.groups())
    return kept + _MASK


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets masked (access keys, tokens, URL passwords)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        # Tracebacks carry URLs and request reprs too; Formatter reuses exc_text when set.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the redaction filter to every handler of ``logger`` (root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
