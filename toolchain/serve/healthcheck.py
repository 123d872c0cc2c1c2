"""The container's HEALTHCHECK: exits 0 when /healthz says 200, and prints what it answered.

Docker starts it every 3 s in every unit, so it is cheap: the image runs this file as a script,
``python3 -I -S /opt/toolchain/runtime/toolchain/serve/healthcheck.py``, which imports nothing but the
interpreter's built-in ``_socket`` (no site, no ``toolchain`` package, no urllib): about 12 ms of CPU a check
against 70 ms for ``python3 -m toolchain.serve.healthcheck`` with urllib (the runtime base image, x86-64;
``scripts/bench_healthcheck``, BENCHMARKS.md). ``python3 -m toolchain.serve.healthcheck [PORT]`` works too.

The address comes from the argument (a port), else from the endpoint file ``serve`` writes when it listens
(so a ``--port``/``--host`` given to serve is honoured), else ``$TOOLCHAIN_SERVE_PORT`` on 127.0.0.1, else port
8080. The runtime images have no curl or wget; python3 is always there.

Standard library only (and only what a bare ``python3 -I -S`` has loaded, plus ``_socket``), Python 3.8.
"""

import os
import sys

ENDPOINT_FILE = os.environ.get("TOOLCHAIN_SERVE_ENDPOINT") or os.path.join(os.environ.get("TMPDIR") or "/tmp",
                                                                             "toolchain-serve.endpoint")
"""Where ``serve`` writes ``HOST PORT`` (one line) once it listens."""
MAX_OUTPUT = 4000
"""Docker's health log keeps 4 KiB of a check's output; ``deploy status`` reads the /healthz body there."""


def publish_endpoint(host: str, port: int) -> None:
    """Write where serve listens (atomically), for the HEALTHCHECK that runs as another process."""
    from toolchain.fileio import write_atomic

    connect = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    try:
        write_atomic(ENDPOINT_FILE, f"{connect} {int(port)}\n")
    except OSError:
        pass  # a read-only /tmp: the health check falls back to $TOOLCHAIN_SERVE_PORT


def endpoint() -> "tuple[str, int]":
    """Where to ask: the endpoint file, else ``$TOOLCHAIN_SERVE_PORT`` on 127.0.0.1, else port 8080."""
    try:
        with open(ENDPOINT_FILE) as handle:
            host, port = handle.read().split()
        return host, int(port)
    except (OSError, ValueError):
        return "127.0.0.1", int(os.environ.get("TOOLCHAIN_SERVE_PORT", "8080"))


def check(port: int, *, host: str = "127.0.0.1", timeout_s: float = 3.0) -> "tuple[bool, str]":
    """``(healthy, what /healthz answered)``: one HTTP/1.0 GET on a plain socket (serve answers and closes)."""
    import _socket

    chunks = []
    try:
        sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.connect((host, port))
            sock.sendall(f"GET /healthz HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode("ascii"))
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        finally:
            sock.close()
    except OSError as exc:
        return False, f"no answer on port {port}: {exc}"
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        return False, f"not an HTTP answer on port {port}: {head[:200].decode(errors='replace')!r}"
    return status[1] == b"200", body.decode(errors="replace")


def main(argv: "list[str] | None" = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    host, port = ("127.0.0.1", int(args[0])) if args else endpoint()
    healthy, text = check(port, host=host)
    print(text[:MAX_OUTPUT])  # /healthz answers compact JSON, so the log holds all of it
    return 0 if healthy else 1


def publish_summary(output: str) -> "dict | None":
    """The ``publish`` entry of a health check's output (a /healthz body), or None (no publishing, or not JSON)."""
    import json

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
