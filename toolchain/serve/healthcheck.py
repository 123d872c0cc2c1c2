"""The container's HEALTHCHECK: ``python3 -m toolchain.serve.healthcheck [PORT]`` exits 0 when /healthz says 200.

The runtime images have no curl or wget; python3 is always there. The address comes from the argument
(a port), else from the endpoint file ``serve`` writes when it listens (so a ``--port``/``--host``
given to serve is honoured), else ``$TOOLCHAIN_SERVE_PORT`` on 127.0.0.1, else port 8080.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from toolchain.fileio import write_atomic

ENDPOINT_FILE = Path(os.environ.get("TOOLCHAIN_SERVE_ENDPOINT", Path(tempfile.gettempdir()) / "toolchain-serve.json"))


def publish_endpoint(host: str, port: int) -> None:
    """Write where serve listens (atomically), for the HEALTHCHECK that runs as another process."""
    connect = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    try:
        write_atomic(ENDPOINT_FILE, json.dumps({"host": connect, "port": int(port)}))
    except OSError:
        pass  # a read-only /tmp: the health check falls back to $TOOLCHAIN_SERVE_PORT


def endpoint() -> tuple[str, int]:
    """Where to ask: the endpoint file, else ``$TOOLCHAIN_SERVE_PORT`` on 127.0.0.1, else port 8080."""
    try:
        data = json.loads(ENDPOINT_FILE.read_text())
        return str(data["host"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return "127.0.0.1", int(os.environ.get("TOOLCHAIN_SERVE_PORT", "8080"))


def check(port: int, *, host: str = "127.0.0.1", timeout_s: float = 3.0) -> tuple[bool, str]:
    """``(healthy, what /healthz answered)``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout_s) as response:  # noqa: S310
            return response.status == 200, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")
    except OSError as exc:
        return False, f"no answer on port {port}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    host, port = ("127.0.0.1", int(args[0])) if args else endpoint()
    healthy, text = check(port, host=host)
    try:  # compact, so Docker's health log (it keeps 4 KiB of output) holds all of it: `deploy status` reads it
        text = json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        pass
    print(text[:4000])
    return 0 if healthy else 1


def publish_summary(output: str) -> dict | None:
    """The ``publish`` entry of a health check's output (a /healthz body), or None (no publishing, or not JSON)."""
    try:
        publish = json.loads(output).get("publish")
    except (ValueError, AttributeError):
        return None
    if not isinstance(publish, dict):
        return None
    keys = ("broker", "connected", "error", "spool_depth", "oldest_unsent_age_s", "evicted", "lost", "sent")
    return {key: publish.get(key) for key in keys}


if __name__ == "__main__":
    sys.exit(main())
