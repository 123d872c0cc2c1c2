"""``toolchain count``: the vehicle pipeline over a recorded clip, its crossings as CSV, scored against a hand count."""
