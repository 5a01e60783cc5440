"""``python -m hm2bp.kernels``: which backend serves each device, and why any backend is unavailable."""

from .backend import describe

print(describe())
