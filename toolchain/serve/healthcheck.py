"""The container's HEALTHCHECK: ``python3 -m toolchain.serve.healthcheck [PORT]`` exits 0 when /healthz says 200.

The runtime images have no curl or wget; python3 is always there. The port comes from the argument,
else ``$TOOLCHAIN_SERVE_PORT``, else 8080 (what ``serve`` listens on by default).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(port: int, *, timeout_s: float = 3.0) -> tuple[bool, str]:
    """``(healthy, what /healthz answered)``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as response:  # noqa: S310
            return response.status == 200, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")
    except OSError as exc:
        return False, f"no answer on port {port}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else int(os.environ.get("TOOLCHAIN_SERVE_PORT", "8080"))
    healthy, text = check(port)
    print(text[:2000])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
