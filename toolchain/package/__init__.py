"""``toolchain package``: the runtime image of one engine for one target (Dockerfile.jetson, Docker Engine API)."""
