"""Test setup: 8 fake CPU devices so sharded code is tested on one machine.

The flag must be set before JAX initialises its backend; single-device code still
runs on device 0.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
