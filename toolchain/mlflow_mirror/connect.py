"""Reaching an MLflow tracking server: URI checks, a quick reachability probe, the client, and its errors.

``mlflow`` (the ``[mlflow]`` extra, ``mlflow-skinny``) is imported here only, when an export starts.
The tracking URI may carry credentials (``https://user:token@host``); it is shown only through
:func:`toolchain.redaction.redact_url`, and MLflow's own credential variables are registered as
secrets so no message repeats them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError
from toolchain.extras import require
from toolchain.redaction import redact_url, register_secret, scrub

SCHEMES = ("http", "https", "databricks")
PROBE_TIMEOUT_S = 10.0
_CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET")
_CREDENTIAL_ERRORS = ("UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED")
_UNAVAILABLE_ERRORS = ("TEMPORARILY_UNAVAILABLE", "SERVICE_UNDER_MAINTENANCE", "INTERNAL_ERROR", "IO_ERROR",
                       "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED")


def check_uri(uri: str) -> str:
    """``uri`` stripped, or a usage error naming what a tracking URI looks like."""
    uri = uri.strip()
    scheme = urlsplit(uri).scheme.lower()
    if scheme not in SCHEMES or (scheme != "databricks" and not urlsplit(uri).netloc):
        raise UsageError(f"'{redact_url(uri)}' is not an MLflow tracking server URI; use http(s)://HOST:PORT of "
                         "`mlflow server` (or databricks)")
    return uri


def probe(uri: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast (exit 5) when nothing answers HTTP at ``uri``; any HTTP answer counts as reachable.

    MLflow's client retries a refused connection for minutes before it gives up; one plain request
    with a short timeout tells an unreachable server apart at once.
    """
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise unreachable(uri, exc) from None


def unreachable(uri: str, cause: BaseException) -> MissingEnvironmentError:
    """The exit-5 error for a tracking server that does not answer."""
    reason = scrub(f"{type(cause).__name__}: {cause}")
    if len(reason) > 300:
        reason = reason[:300] + "..."
    return MissingEnvironmentError(
        f"the MLflow tracking server {redact_url(uri)} is unreachable ({reason}). Check the URI, that `mlflow server` "
        "runs there and answers from this host (proxy settings included), then rerun: the export is idempotent"
    )


def client(uri: str) -> Any:
    """An ``MlflowClient`` for tracking and model registry at ``uri`` (exit 5 naming ``[mlflow]`` if it is missing)."""
    require("mlflow", needed_by="the MLflow mirror")
    for variable in _CREDENTIAL_VARIABLES:
        register_secret(os.environ.get(variable))
    split = urlsplit(uri)
    if split.password:
        register_secret(split.password)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# MLflow's defaults (7 retries, doubling waits) keep a dead server's export waiting for minutes; a user's own
# setting of these variables wins.
_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


@contextlib.contextmanager
def client_environment() -> Iterator[None]:
    """While an export talks to MLflow: no run links printed on stdout (it carries the one ``--json`` document;
    anything else MLflow prints goes to stderr), and bounded retries unless the user set their own."""
    settings = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                **{k: v for k, v in _CLIENT_DEFAULTS.items() if k not in os.environ}}
    previous = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def translated_errors(uri: str) -> Iterator[None]:
    """Turn MLflow's exceptions into the toolchain's: unreachable or refusing servers are exit 5, bad values exit 4."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = str(getattr(exc, "error_code", ""))
        message = " ".join(scrub(getattr(exc, "message", None) or str(exc)).split())
        if len(message) > 400:
            message = message[:400] + "..."
        where = redact_url(uri)
        if code == "ENDPOINT_NOT_FOUND":
            raise MissingEnvironmentError(
                f"{where} answers HTTP but does not serve MLflow's REST API ({message}). Check the URI: the tracking "
                "server's base URL, as `mlflow server` prints it (e.g. http://HOST:5000)"
            ) from None
        if code in _CREDENTIAL_ERRORS:
            raise MissingEnvironmentError(
                f"the MLflow server {where} refused the credentials ({code}: {message}). Set MLFLOW_TRACKING_TOKEN, or "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, for a user allowed to write there"
            ) from None
        if code in _UNAVAILABLE_ERRORS or "Max retries exceeded" in message or "ConnectionError" in message:
            raise MissingEnvironmentError(
                f"the MLflow server {where} failed ({code}: {message}). Check that it is healthy, then rerun: the "
                "export is idempotent and finishes what an interrupted one left"
            ) from None
        raise BadInputError(f"the MLflow server {where} refused a value ({code}: {message})") from None
