"""``toolchain serve``: the command is the service's own (:mod:`toolchain.serve.command`), registered as it is.

It is defined with the service so the roadside image runs the same command (``python3 -m toolchain.serve``)
without shipping the CLI; under the CLI it reads the global options (``--workspace``, ``--registry``,
``--blobs``, ``--json``) from :class:`toolchain.cli.output.AppContext`.
"""

from __future__ import annotations

from toolchain.serve.command import serve

__all__ = ["serve"]
