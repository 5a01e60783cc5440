"""Input encodings: Bernoulli rate code, augmentation warp, BSA (golden TI46 raster)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import shared_paths
from hm2bp.encoding import augment, bsa_encode, bsa_kernel, poisson_encode

GOLDEN = shared_paths.GOLDEN / "test"
GOLDEN_LYON = GOLDEN / "ti_alpha" / "0" / "f1_u10_c0.dat"
GOLDEN_SPIKES = GOLDEN / "golden" / "speech" / "ti_alpha" / "spikes" / "Input_Response" / "0" / "input_spikes_0_0.dat"


# --------------------------------------------------------------------------------------------------
# poisson_encode
# --------------------------------------------------------------------------------------------------
def test_poisson_shape_no_spike_at_t0_and_zero_pixels():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros((3, 28, 28), dtype=torch.uint8)
    img[:, 10:15, 10:15] = 255
    s = poisson_encode(img, T=50, generator=g)
    assert s.shape == (50, 3, 784) and s.dtype == torch.bool
    assert not s[0].any()
    assert not s[:, :, 0].any()  # q = 0 never fires
    assert s[:, :, 10 * 28 + 10].any()


def test_poisson_rate_matches_p():
    g = torch.Generator().manual_seed(1234)
    q = torch.tensor([[0, 51, 128, 255]], dtype=torch.uint8).repeat(500, 1)
    T = 401
    s = poisson_encode(q, T=T, generator=g)
    rate = s[1:].float().mean(dim=(0, 1))  # over t = 1…T−1 and the batch
    p = q[0].double() / (5.5 * 255)
    n = (T - 1) * 500
    for k in range(4):
        tol = 5 * float(torch.sqrt(p[k] * (1 - p[k]) / n)) + 1e-12
        assert abs(float(rate[k]) - float(p[k])) <= tol, (k, float(rate[k]), float(p[k]))
    assert float(p[3]) == pytest.approx(0.181818, rel=1e-5)


def test_poisson_seeded_reproducible_and_2d():
    img = torch.randint(0, 256, (2, 784), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    a = poisson_encode(img, 20, torch.Generator().manual_seed(7))
    b = poisson_encode(img.numpy(), 20, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    c = poisson_encode(img, 20, torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)
    assert poisson_encode(img, 1).shape == (1, 2, 784) and not poisson_encode(img, 1).any()


def test_poisson_one_generator_per_image_gives_each_image_its_own_raster():
    img = torch.randint(0, 256, (3, 784), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    img[1, :300] = 0
    both = poisson_encode(img, 30, [torch.Generator().manual_seed(s) for s in (11, 12, 13)])
    for b, seed in enumerate((11, 12, 13)):
        alone = poisson_encode(img[b : b + 1], 30, torch.Generator().manual_seed(seed))
        assert torch.equal(both[:, b : b + 1], alone)
    assert both[:, 1, :300].sum() == 0 and both[:, 1].sum() > 0
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        poisson_encode(img, 30, [torch.Generator(), torch.Generator()])


def test_poisson_rejects_bad_input():
    with pytest.raises(ValueError):
        poisson_encode(torch.zeros(2, 3, 4, 5), 10)
    with pytest.raises(ValueError):
        poisson_encode(torch.full((1, 4), 300.0), 10)


# --------------------------------------------------------------------------------------------------
# augment
# --------------------------------------------------------------------------------------------------
def _digit_like() -> torch.Tensor:
    img = torch.zeros(28, 28)
    img[6:22, 12:16] = 255.0  # a vertical bar
    img[6:9, 8:20] = 200.0
    return img


def test_augment_identity_when_all_off():
    x = _digit_like()[None].repeat(2, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0), scale=0.0, rotation_deg=0.0, distortion=0.0)
    torch.testing.assert_close(out, x)


def test_augment_shared_vs_per_sample_and_seeded():
    x = _digit_like()[None].repeat(4, 1, 1)
    a = augment(x, torch.Generator().manual_seed(5), shared_field=True)
    b = augment(x, torch.Generator().manual_seed(5), shared_field=True)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    for k in range(1, 4):  # one field for the batch: identical inputs give identical outputs
        torch.testing.assert_close(a[k], a[0])
    c = augment(x, torch.Generator().manual_seed(5), shared_field=False)
    assert not torch.allclose(c[0], c[1])
    assert not torch.allclose(a[0], x[0])  # it does warp


def test_augment_values_and_mass():
    x = _digit_like()[None].repeat(8, 1, 1)
    out = augment(x, torch.Generator().manual_seed(11), shared_field=False)
    assert out.min() >= 0 and out.max() <= 255 + 1e-3  # bilinear: convex combinations, background 0
    ratio = out.sum(dim=(1, 2)) / x.sum(dim=(1, 2))
    assert ((ratio > 0.6) & (ratio < 1.6)).all()  # ink is moved, not created or destroyed wholesale
    # the corners stay background
    assert out[:, 0, 0].abs().max() == 0 and out[:, -1, -1].abs().max() == 0


def test_augment_pure_rotation_direction():
    """A pure rotation (no elastic part, no scaling) of a point moves it along a circle around (14, 14)."""
    x = torch.zeros(1, 28, 28)
    x[0, 14, 24] = 255.0  # 10 px right of the centre
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, scale=0.0, rotation_deg=12.0, distortion=0.0)
    r, c = np.unravel_index(int(out[0].argmax()), (28, 28))
    assert (r - 14) ** 2 + (c - 14) ** 2 == pytest.approx(100, abs=12)
    assert abs(r - 14) <= 3 and out[0].sum() == pytest.approx(255.0, rel=0.05)


def test_augment_then_poisson():
    x = _digit_like()[None].repeat(2, 1, 1)
    warped = augment(x, torch.Generator().manual_seed(2))
    s = poisson_encode(warped, 30, torch.Generator().manual_seed(2))
    assert s.shape == (30, 2, 784) and not s[0].any() and s.any()


# --------------------------------------------------------------------------------------------------
# BSA
# --------------------------------------------------------------------------------------------------
def test_bsa_kernel():
    h = bsa_kernel(24)
    assert h.shape == (24,) and h.sum() == pytest.approx(1.0, abs=1e-15)
    assert int(h.argmax()) == 12
    assert h[0] / h[12] == pytest.approx(np.exp(-144 / 25))


def test_bsa_silence_and_shape():
    out = bsa_encode(np.zeros((3, 5)), T=60)
    assert out.shape == (60, 3) and out.dtype == bool and not out.any()


def test_bsa_constant_signal_spikes_and_drops_late_times():
    lyon = np.full((1, 20), 1e-3)  # ×2000 = 2 per step: strong drive
    full = bsa_encode(lyon, T=1000)
    assert full.any() and not full[0].any()
    last = int(np.nonzero(full[:, 0])[0].max())
    short = bsa_encode(lyon, T=last)  # the spike at `last` is dropped (time must be < T)
    assert short.shape == (last, 1)
    np.testing.assert_array_equal(short, full[:last])


def _read_sparse_spikes(path: Path) -> np.ndarray:
    """Golden sparse spike file: '-1\\t-1', then 'neuron\\ttime' lines, then a closing '-1\\t-1'."""
    a = np.loadtxt(path, dtype=np.int64, ndmin=2)
    assert a[0].tolist() == [-1, -1] and a[-1].tolist() == [-1, -1]
    return a[1:-1]


@pytest.mark.golden
def test_bsa_golden_ti46():
    if not (GOLDEN_LYON.is_file() and GOLDEN_SPIKES.is_file()):
        pytest.skip(f"golden data not found under {GOLDEN} (needs ti_alpha/0/f1_u10_c0.dat and its Input_Response)")
    from hm2bp.data.speech import read_lyon_text

    T = 658
    lyon = read_lyon_text(GOLDEN_LYON)
    assert lyon.shape == (78, 68)
    pairs = _read_sparse_spikes(GOLDEN_SPIKES)
    pairs = pairs[pairs[:, 1] < T]  # readers drop times >= T (the dump holds one spike at 658)
    golden = np.zeros((T, 78), dtype=bool)
    golden[pairs[:, 1], pairs[:, 0]] = True
    assert golden.sum() == 5064 == len(pairs)

    spikes = bsa_encode(lyon, T)
    assert spikes.sum() == 5064
    np.testing.assert_array_equal(spikes, golden)
    # the float64 values of the same text give the same raster
    np.testing.assert_array_equal(bsa_encode(np.loadtxt(GOLDEN_LYON), T), golden)
