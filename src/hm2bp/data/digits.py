"""scikit-learn's bundled handwritten digits (8×8, 1,797 images): an offline dataset for quick runs.

The images ship inside the scikit-learn wheel (``sklearn.datasets.load_digits``), so no download is needed.
Pixels 0…16 are scaled to 0…255 (rounded) so that :func:`hm2bp.encoding.poisson_encode` applies unchanged.
The train/test split is a fixed seeded permutation: the same ``seed`` always gives the same split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_DIGITS", "load_digits"]

N_DIGITS = 1797


def load_digits(split: str = "train", n_test: int = 360, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of scikit-learn's digits.

    Args:
        split: "train" (the 1,797 − ``n_test`` others) or "test" (``n_test`` images).
        n_test: size of the test split (default 360, i.e. 1,437 / 360).
        seed: seed of the split's permutation.

    Returns:
        ``(images uint8 [N, 8, 8] in 0…255, labels int64 [N])``, in the permuted order.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn "
                          "(or the hm2bp extra that provides it)") from e
    s = split.lower()
    if s not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 < n_test < N_DIGITS:
        raise ValueError(f"n_test must lie in 1…{N_DIGITS - 1}, got {n_test}")
    d = _sk_load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = np.asarray(d.target, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(labels))
    idx = perm[:n_test] if s == "test" else perm[n_test:]
    return np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx])
