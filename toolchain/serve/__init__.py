"""``toolchain serve``: the roadside service that runs in the unit's container.

It reads camera streams through the runtime pipeline (:mod:`toolchain.runtime.pipeline`), classifies
frames, writes one JSON-lines event per frame, serves ``/healthz`` and ``/metrics`` (Prometheus text
format) over HTTP, reconnects to cameras that drop, and exits cleanly on SIGTERM. Like the rest of the
runtime path it imports neither training code nor torch.
"""
