"""hm2bp: hybrid macro/micro level backpropagation (HM2-BP) for spiking neural networks.

Tensors are time-major: spike trains are ``[T, B, N]`` (FC) or ``[T, B, C, H, W]`` (conv/pool).
"""

__version__ = "0.2.0"
