"""toolchain: an edge-optimized build toolchain for car/truck CCTV classifiers on Jetson units."""

__version__ = "0.1.0"
