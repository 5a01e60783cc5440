"""Implementations of the hot loops behind one seam (``backend.py``): the portable torch twin, the compiled C
kernels (``cpu.py``) and Triton kernels for CUDA. ``backend_for(*tensors)`` chooses; ``HM2BP_BACKEND=torch``,
``cpu`` or ``triton`` forces one; ``python -m hm2bp.kernels`` prints which backend each device gets and why.

Submodules load lazily: importing this package imports neither the C library nor triton.
"""

from .backend import Backend, backend_for, describe, get_backend

__all__ = ["Backend", "backend_for", "describe", "get_backend"]
