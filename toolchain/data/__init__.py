"""Datasets: list a lake, decode and validate images, shard them, split them, version them."""
