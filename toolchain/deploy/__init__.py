"""``toolchain deploy``: roll a packaged image out to roadside units (fleet.toml), with canaries and rollback."""
