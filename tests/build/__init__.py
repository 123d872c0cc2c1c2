"""Tests of engine builds: the build plan, the TensorRT builder script, the build service."""
