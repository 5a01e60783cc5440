"""Input encodings of HM2-BP (docs/algorithm.md §1.5): pure functions, randomness only through a ``torch.Generator``.

- :func:`poisson_encode`: the Bernoulli "Poisson" rate code of MNIST / EMNIST pixels.
- :func:`augment`: the elastic + scaling + rotation warp of the spiking-CNN runs.
- :func:`bsa_encode`: Ben's Spiker Algorithm on a Lyon-ear cochleagram (TI46 speech), exactly as the
  reference ``readData/readSpeechData.cpp: BSA``.

Spike trains are time-major: ``[T, B, N]`` for :func:`poisson_encode`, ``[T, channels]`` for one utterance in
:func:`bsa_encode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["augment", "bsa_encode", "bsa_kernel", "poisson_encode"]


# --------------------------------------------------------------------------------------------------
# MNIST / EMNIST: Bernoulli rate code
# --------------------------------------------------------------------------------------------------
def poisson_encode(
    images: torch.Tensor | np.ndarray,
    T: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    max_rate_div: float = 5.5,
) -> torch.Tensor:
    """Bernoulli ("Poisson") rate code of pixel intensities (docs/algorithm.md §1.5).

    Args:
        images: pixel values q in [0, 255], shape ``[B, H, W]`` or ``[B, N]`` (uint8, or float after
            :func:`augment`). A numpy array is accepted.
        T: number of time steps (END_TIME).
        generator: source of randomness; its device must be the images' device. ``None`` uses torch's
            global generator. A sequence of B generators gives each image its own (its raster is then
            the one it gets when encoded alone, whatever batch it is in).
        max_rate_div: p = q / (max_rate_div · 255); the reference uses 5.5, so p ≤ 0.1818 per step.

    Returns:
        ``torch.bool`` tensor ``[T, B, N]`` with s(t) = [U(0,1) < p] for t = 1…T−1 and no spike at t = 0.
        Pixels with q = 0 never fire, so uniforms are drawn only for the others (about a fifth of an
        MNIST image): ``[T−1, number of lit pixels]``, the lit pixels in row-major (b, n) order.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = poisson_encode(torch.full((2, 784), 255, dtype=torch.uint8), T=400, generator=g)
        >>> s.shape, bool(s[0].any())
        (torch.Size([400, 2, 784]), False)
    """
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.reshape(x.shape[0], -1)
    elif x.dim() != 2:
        raise ValueError(f"images must be [B, H, W] or [B, N], got shape {tuple(x.shape)}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if max_rate_div <= 0:
        raise ValueError(f"max_rate_div must be > 0, got {max_rate_div}")
    p = x.to(torch.float32)
    if x.is_floating_point() and p.numel():
        # float images (e.g. after augment) may carry round-off of a few ulps beyond 0 or 255
        if not torch.isfinite(p).all() or p.min() < -1e-3 or p.max() > 255 + 1e-3:
            raise ValueError("pixel values must be finite and lie in [0, 255]")
        p = p.clamp(0.0, 255.0)
    elif p.numel() and (p.min() < 0 or p.max() > 255):
        raise ValueError("pixel values must lie in [0, 255]")
    p = p / (max_rate_div * 255.0)
    B, N = p.shape
    out = torch.zeros((T, B, N), dtype=torch.bool, device=p.device)
    if T < 2:
        return out
    if generator is None or isinstance(generator, torch.Generator):
        lit = p > 0
        u = torch.rand((T - 1, int(lit.sum())), generator=generator, device=p.device, dtype=torch.float32)
        out[1:, lit] = u < p[lit]
        return out
    if len(generator) != B:
        raise ValueError(f"got {len(generator)} generators for {B} images")
    for b, gen in enumerate(generator):
        cols = torch.nonzero(p[b]).flatten()
        u = torch.rand((T - 1, cols.numel()), generator=gen, device=p.device, dtype=torch.float32)
        out[1:, b, cols] = u < p[b, cols]
    return out


# --------------------------------------------------------------------------------------------------
# Augmentation: elastic field + scaling + rotation (dataAugmentation/cuTransformation.cu)
# --------------------------------------------------------------------------------------------------
_GAUSS_SIZE = 21
_GAUSS_SIGMA = 4.0


def _elastic_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The reference's 21×21 Gaussian, val = exp(−r²/(2σ²)) / (2πσ), σ = 4 (not normalised to sum 1)."""
    mid = _GAUSS_SIZE // 2
    r = torch.arange(_GAUSS_SIZE, dtype=torch.float64) - mid
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    k = torch.exp(-r2 / (2.0 * _GAUSS_SIGMA**2)) / (_GAUSS_SIGMA * 2.0 * math.pi)
    return k.to(dtype=dtype, device=device)


def _displacement(
    n: int,
    H: int,
    W: int,
    generator: torch.Generator | None,
    scale: float,
    rotation_deg: float,
    distortion: float,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return n displacement fields (disp_row, disp_col), each ``[n, H, W]``, in pixels."""
    disp_v = torch.zeros((n, H, W), dtype=dtype, device=device)
    disp_h = torch.zeros((n, H, W), dtype=dtype, device=device)
    if distortion >= 0.1:  # the reference switches the elastic part off below 0.1
        noise = torch.rand((n, 2, H, W), generator=generator, device=device, dtype=dtype) * 2.0 - 1.0
        k = _elastic_kernel(dtype, device)[None, None].expand(2, 1, _GAUSS_SIZE, _GAUSS_SIZE)
        smooth = F.conv2d(noise, k, padding=_GAUSS_SIZE // 2, groups=2)  # zero outside the image
        disp_h = disp_h + distortion * smooth[:, 0]
        disp_v = disp_v + distortion * smooth[:, 1]
    u = torch.rand((n, 3), generator=generator, device=device, dtype=dtype) * 2.0 - 1.0
    s_h = scale * u[:, 0].clamp_min(0.0)  # "rand clipped at >= 0": 0 … scale
    s_v = scale * u[:, 1].clamp_min(0.0)
    angle = u[:, 2] * (rotation_deg * math.pi / 180.0)
    rows = torch.arange(H, dtype=dtype, device=device)[:, None] - (H // 2)  # xx in the reference
    cols = torch.arange(W, dtype=dtype, device=device)[None, :] - (W // 2)  # yy in the reference
    disp_h = disp_h + s_h[:, None, None] * cols
    disp_v = disp_v + s_v[:, None, None] * rows
    c = torch.cos(angle)[:, None, None]
    s = torch.sin(angle)[:, None, None]
    disp_h = disp_h + cols - cols * c - rows * s
    disp_v = disp_v + rows - rows * c + cols * s
    return disp_v, disp_h


def augment(
    images: torch.Tensor,
    generator: torch.Generator | None,
    scale: float = 0.12,
    rotation_deg: float = 12.0,
    distortion: float = 3.4,
    shared_field: bool = True,
) -> torch.Tensor:
    """Random elastic distortion, scaling and rotation of a batch of images (docs/algorithm.md §1.5).

    Follows ``dataAugmentation/cuTransformation.cu`` (Simard-style warping):

    - elastic field: uniform noise in [−1, 1] per pixel and direction, convolved (zero padding) with the
      reference's 21×21 Gaussian exp(−r²/32)/(8π) (σ = 4, *not* normalised to sum 1), times ``distortion``;
    - scaling: horizontal and vertical factors ``scale``·max(u, 0) with u ~ U(−1, 1) (so 0…12 %, zoom in);
    - rotation: angle ``rotation_deg``·u, u ~ U(−1, 1), about pixel (H//2, W//2);
    - the output pixel (r, c) samples the input at (r − disp_row, c − disp_col) bilinearly; samples
      outside the image read background 0.

    Deviations from the CUDA code, on purpose: the horizontal and vertical noise fields, the two scale
    factors and the angle are drawn independently (the reference reuses the same random numbers for
    some of them, a by-product of its buffer indexing), and border pixels blend with the background
    instead of being dropped.

    Args:
        images: ``[B, H, W]`` float, pixel values (e.g. 0…255 with background 0).
        generator: source of randomness (device of ``images``).
        scale: maximum scaling as a fraction (config SCALE = 12 → 0.12).
        rotation_deg: maximum rotation in degrees (ROTATION = 12).
        distortion: elastic scaling (DISTORTION = 3.4); below 0.1 the elastic part is off.
        shared_field: one displacement field for the whole batch (the authors draw one per epoch and
            share it by every sample); otherwise one field per image.

    Returns:
        Warped images, same shape and dtype as ``images``.
    """
    if images.dim() != 3:
        raise ValueError(f"images must be [B, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
    B, H, W = images.shape
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    x = images.to(dtype)
    n = 1 if shared_field else B
    disp_v, disp_h = _displacement(
        n, H, W, generator, scale, rotation_deg, distortion, dtype, images.device
    )
    rows = torch.arange(H, dtype=dtype, device=images.device)[:, None]
    cols = torch.arange(W, dtype=dtype, device=images.device)[None, :]
    src_r = rows - disp_v  # [n, H, W]
    src_c = cols - disp_h
    # grid_sample with align_corners=True maps −1 → pixel 0 and +1 → pixel size−1.
    gx = src_c * (2.0 / max(W - 1, 1)) - 1.0
    gy = src_r * (2.0 / max(H - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).expand(B, H, W, 2)
    out = F.grid_sample(
        x[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]
    # bilinear output is a convex combination of pixels and background 0: clip float round-off
    lo = torch.clamp(x.amin(), max=0.0)
    hi = torch.clamp(x.amax(), min=0.0)
    out = torch.minimum(torch.maximum(out, lo), hi)
    return out.to(images.dtype)


# --------------------------------------------------------------------------------------------------
# TI46 speech: BSA (readData/readSpeechData.cpp)
# --------------------------------------------------------------------------------------------------
def bsa_kernel(kernel_len: int = 24) -> np.ndarray:
    """BSA FIR filter h[n] = exp(−(n − L/2)² / 25), n = 0…L−1, normalised to sum 1 (float64)."""
    n = np.arange(kernel_len, dtype=np.float64)
    h = np.exp(-((n - kernel_len / 2.0) ** 2) / 25.0)
    return h / h.sum()


def bsa_encode(
    lyon: np.ndarray,
    T: int,
    *,
    repeat: int = 10,
    gain: float = 2000.0,
    kernel_len: int = 24,
    threshold: float = 0.6,
) -> np.ndarray:
    """Ben's Spiker Algorithm on a cochleagram, exactly as the reference (docs/algorithm.md §1.5, TI46 step 3).

    Per channel, in float64: every frame value is repeated ``repeat`` times and multiplied by ``gain``,
    and ``kernel_len`` zeros are appended. For i = 0 … repeat·frames − 1:
    e1 = Σ_n |sig[i+n] − h[n]|, e2 = Σ_n |sig[i+n]|; if e1 < e2 − threshold a spike is emitted at time
    i + 1 (kept only if i + 1 < T) and h is subtracted from sig[i … i+kernel_len−1].

    The reference reads the cochleagram from text as C ``float``; pass float32 values (as
    :func:`hm2bp.data.speech.read_lyon_text` returns) to reproduce its spikes bit for bit.

    Args:
        lyon: ``[channels, frames]`` cochleagram (e.g. 78 Lyon-ear channels × n frames).
        T: number of time steps of the raster.

    Returns:
        ``bool`` array ``[T, channels]``. Time 0 never holds a spike.
    """
    a = np.asarray(lyon)
    if a.ndim != 2:
        raise ValueError(f"lyon must be [channels, frames], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("lyon contains NaN or inf")
    if T < 0 or repeat < 1 or kernel_len < 1:
        raise ValueError("T must be >= 0, repeat and kernel_len >= 1")
    C, n_frames = a.shape
    L = n_frames * repeat
    h = bsa_kernel(kernel_len)
    sig = np.zeros((C, L + kernel_len), dtype=np.float64)
    sig[:, :L] = np.repeat(a.astype(np.float64) * float(gain), repeat, axis=1)
    out = np.zeros((T, C), dtype=bool)
    for i in range(L):
        win = sig[:, i : i + kernel_len]
        # Accumulate the sums in the reference's order (n = 0, 1, …) so ties resolve identically.
        e1 = np.zeros(C, dtype=np.float64)
        e2 = np.zeros(C, dtype=np.float64)
        for n in range(kernel_len):
            e1 += np.abs(win[:, n] - h[n])
            e2 += np.abs(win[:, n])
        fire = e1 < (e2 - threshold)
        if fire.any():
            win[fire] -= h
            if i + 1 < T:
                out[i + 1, fire] = True
    return out
