"""One redaction rule for every URL the toolchain prints, logs, serves or records.

Camera, engine and registry URLs can carry secrets in two places: the userinfo (``rtsp://admin:PW@cam``,
or a bare token ``rtsp://TOKEN@cam``) and the query string (``?user=admin&pwd=PW``, ``?token=...``).
:func:`redact_url` removes both; :func:`scrub` applies it to every URL inside free text (FFmpeg and
Docker error messages quote the URL they failed on) and also masks any secret value registered with
:func:`register_secret` (a password read from a credentials file), however it was quoted.

The rule is applied at the boundaries: a frame source keeps the real URL only where it opens the
stream, and everything that leaves a process (messages, logs, metric labels, events, ``/healthz``,
records, console lines, ``--json`` documents) goes through :func:`redact_url` or :func:`scrub`.

Standard library only, Python 3.8 compatible: the roadside runtime image imports it.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"

# Query parameter names that carry credentials (case-insensitive). Cameras use user/pwd, usr/pass,
# loginuse/loginpas; cloud URLs use token, key, signature, X-Amz-*.
_SECRET_PARAM = re.compile(
    r"^(u|p|pw|pwd|pass|passwd|password|passwort|user|username|usr|login|loginuse|loginpas|account|"
    r"auth|authorization|token|access[_-]?token|refresh[_-]?token|id[_-]?token|.*[_-]token|key|api[_-]?key|"
    r".*[_-]key|secret|.*[_-]secret|client[_-]?secret|sig|signature|credential|credentials|session|sessionid|"
    r"sid|x-amz-.*|x-goog-.*)$",
    re.IGNORECASE,
)
# A URL inside text: scheme://, then anything up to whitespace, a quote or a bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>()\[\]{}]+")

# A query-style parameter in text that is not (or no longer, after terminal styling) inside a whole URL.
_PARAM_IN_TEXT = re.compile(r"([?&;])([A-Za-z][\w.-]*)=([^&\s'\"<>]*)")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter called ``name`` carries a credential (``pwd``, ``token``, ``X-Amz-Signature``...)."""
    return _SECRET_PARAM.match(name) is not None


def register_secret(value: str | None) -> None:
    """Mask ``value`` (and its percent-encoded and decoded forms) wherever :func:`scrub` sees it.

    Short values (under 4 characters) are not registered: masking them would mangle ordinary text.
    """
    if not value or len(value) < 4:
        return
    with _secrets_lock:
        for form in {value, quote(value, safe=""), unquote(value)}:
            if len(form) >= 4:
                _secrets.add(form)


def _mask_params(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret_parameter(name) for name, _ in pairs):
        return query
    return urlencode([(name, MASK if is_secret_parameter(name) else value) for name, value in pairs], safe="*")


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo becomes ``***@``, secret-looking query values ``***``.

    Text that does not parse as a URL is returned scrubbed of registered secrets.
    """
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, _mask_params(parts.query)
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        # Rebuilt only when something was masked: urlunsplit would also rewrite unix:///path as unix:/path.
        changed = netloc != parts.netloc or query != parts.query
        redacted = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)) if changed else url
    except ValueError:  # e.g. an invalid port or IPv6 literal: mask the userinfo by hand
        redacted = re.sub(r"(://)[^/@\s]*@", r"\1" + MASK + "@", url)
    return _mask_registered(redacted)


def _mask_registered(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub(text: Any) -> str:
    """``text`` with every URL in it redacted and every registered secret masked."""
    text = str(text)
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    if "=" in text:
        text = _PARAM_IN_TEXT.sub(
            lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if is_secret_parameter(m.group(2)) else m.group(0), text)
    return _mask_registered(text)


def scrub_data(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with :func:`scrub` applied to every string, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(k): scrub_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_data(v) for v in value)
    return value


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries userinfo or a secret-looking query parameter."""
    return redact_url(url) != url
