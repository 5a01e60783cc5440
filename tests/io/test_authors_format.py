"""Tests of hm2bp.io.authors: the readers of the HM2-BP authors' file formats (docs/algorithm.md §6.2).

Part 1 (``golden``): the real files under ``../shared/golden/mm-bp-snn`` (skipped, naming the missing
path, when that folder is absent).
Part 2 (``reliability``): hypothesis property tests over every reader -- truncated copies, random bytes,
mutated tokens, wrong headers, oversized indices/counts, NaN tokens, broken gzip. Each must raise
``DataFormatError`` naming the file, never another exception type. The whole file runs in well under 60 s.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared_paths
from hm2bp.errors import ConfigError, DataFormatError
from hm2bp.io.authors import (
    CNN_CHECKPOINT_ARCH,
    checkpoint_size,
    read_authors_config,
    read_checkpoint_cnn,
    read_conv_weights,
    read_dense_spike_map,
    read_lyon_matrix,
    read_sparse_spikes,
    read_weight_list,
)

GOLDEN_ROOT = shared_paths.GOLDEN_ROOT
MM = GOLDEN_ROOT / "mm-bp-snn"
CNN = "test/golden/cnn_mnist"
SPEECH = "test/golden/speech/ti_alpha"

# Hypothesis: no deadline (file system timings vary); tmp_path is reused across examples on purpose
# (each example overwrites the same file), hence the suppressed health check.
PROPERTY = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)


def golden(rel: str) -> Path:
    """Path of a golden file (plain or .gz); skip the test, naming the path, when it is absent."""
    p = MM / rel
    if not (p.is_file() or Path(str(p) + ".gz").is_file()):
        pytest.skip(f"golden data absent: {p} (nor {p.name}.gz) not found")
    return p


def raw_text(p: Path) -> str:
    """Plain-Python reading of a golden file (for cross-checks against the vectorised readers)."""
    if p.is_file():
        return p.read_text()
    return gzip.decompress(Path(str(p) + ".gz").read_bytes()).decode()


# ==================================================================================================
# Part 1: golden files
# ==================================================================================================


@pytest.mark.golden
def test_mnist_input_spikes():
    s = read_sparse_spikes(golden("test/cnn_mnist/input_spikes_0_5.dat"), 784, 450)
    assert s.shape == (450, 784) and s.dtype == bool
    t, n = np.nonzero(s)
    assert s.sum() == 8927
    assert (n.min(), n.max()) == (152, 683)
    assert (t.min(), t.max()) == (1, 449)


@pytest.mark.golden
def test_sparse_spikes_match_plain_parse_and_drop_late_times():
    p = golden("test/cnn_mnist/input_spikes_0_5.dat")
    lines = raw_text(p).split("\n")
    assert lines[0] == "-1\t-1" and lines[-2] == "-1\t-1"
    pairs = [tuple(map(int, line.split("\t"))) for line in lines[1:-2]]
    ref = np.zeros((450, 784), dtype=bool)
    for neuron, t in pairs:
        ref[t, neuron] = True
    np.testing.assert_array_equal(read_sparse_spikes(p, 784, 450), ref)
    # Readers drop times >= T (docs/algorithm.md §6.2): with T = 400 only the spikes before 400 remain.
    np.testing.assert_array_equal(read_sparse_spikes(p, 784, 400), ref[:400])


@pytest.mark.golden
def test_cnn_sparse_layers_and_speech_input():
    hidden = read_sparse_spikes(golden(f"{CNN}/spikes/hidden/train/hidden.dat"), 100, 450)
    assert hidden.shape == (450, 100) and 0 < hidden.sum() < 450 * 100
    # Every CNN output neuron is silent (docs/algorithm.md §6.3), except one spike in the softmax "test" file.
    assert read_sparse_spikes(golden(f"{CNN}/spikes/output/train/output.dat"), 10, 450).sum() == 0
    out = read_sparse_spikes(golden(f"{CNN}/spikes_softmax/output/test/output.dat"), 10, 450)
    assert [tuple(x) for x in np.argwhere(out)] == [(269, 2)]
    # TI46 input: 5,064 spikes with T = 658 (docs/algorithm.md §6.4).
    speech = read_sparse_spikes(golden(f"{SPEECH}/spikes/Input_Response/0/input_spikes_0_0.dat"), 78, 658)
    assert speech.sum() == 5064


DENSE_MAPS = [  # (layer, channels, height = width) of the 784-5C5-P2-3C5-P2-100-10 CNN test net
    ("conv1", 5, 24),
    ("pool1", 5, 12),
    ("conv2", 3, 8),
    ("pool2", 3, 4),
]


@pytest.mark.golden
@pytest.mark.parametrize("variant", ["spikes", "spikes_softmax"])
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("layer,channels,size", DENSE_MAPS)
def test_dense_spike_maps(variant, split, layer, channels, size):
    p = golden(f"{CNN}/{variant}/{layer}/{split}/{layer}_1.dat")
    m = read_dense_spike_map(p, channels, 450, size, size)
    assert m.shape == (450, channels, size, size) and m.dtype == bool
    assert 0 < m.sum() < m.size
    # Layout: channel, then time, then neuron x*W + y -- compare with a plain parse.
    tokens = np.array(raw_text(p).split(), dtype=np.int8)
    assert tokens.size == channels * 450 * size * size
    ref = tokens.reshape(channels, 450, size, size).transpose(1, 0, 2, 3).astype(bool)
    np.testing.assert_array_equal(m, ref)


@pytest.mark.golden
def test_conv1_dense_map_gz_transparent_and_fast():
    p = golden(f"{CNN}/spikes/conv1/train/conv1_1.dat")
    t0 = time.perf_counter()
    a = read_dense_spike_map(p, 5, 450, 24, 24)  # 1,296,000 tokens
    elapsed = time.perf_counter() - t0
    assert a.shape == (450, 5, 24, 24)
    assert elapsed < 5.0, f"dense map parse took {elapsed:.2f} s (should be vectorised)"
    gz = Path(str(p) + ".gz")
    if gz.is_file():  # the same file named explicitly with its .gz suffix
        np.testing.assert_array_equal(read_dense_spike_map(gz, 5, 450, 24, 24), a)


WEIGHT_LISTS = [  # (file, n_post, n_pre, fully connected?)
    (f"{CNN}/weights/hidden_info.txt", 100, 3 * 4 * 4, True),
    (f"{CNN}/weights/hidden_info_trained.txt", 100, 48, True),
    (f"{CNN}/weights/output_info.txt", 10, 100, True),
    (f"{CNN}/weights/output_info_trained.txt", 10, 100, True),
    (f"{CNN}/weights_softmax/output_info.txt", 10, 100, True),
    (f"{SPEECH}/weights/h_weights_info.txt", 64, 135, True),
    (f"{SPEECH}/weights/h_weights_info_trained.txt", 64, 135, True),
    (f"{SPEECH}/weights/o_weights_info.txt", 26, 64, True),
    (f"{SPEECH}/weights/r_weights_info.txt", 135, 78, False),
    (f"{SPEECH}/weights/r_weights_recurrent_info.txt", 135, 135, False),
]


@pytest.mark.golden
@pytest.mark.parametrize("rel,n_post,n_pre,dense", WEIGHT_LISTS)
def test_weight_lists_match_plain_accumulation(rel, n_post, n_pre, dense):
    p = golden(rel)
    W = read_weight_list(p, n_post, n_pre, complete=dense)
    assert W.shape == (n_post, n_pre) and W.dtype == np.float32
    ref = np.zeros((n_post, n_pre))
    for line in raw_text(p).splitlines():
        _, pre, post, w = line.split("\t")
        ref[int(post.rsplit("_", 1)[1]), int(pre.rsplit("_", 1)[1])] += float(w)
    np.testing.assert_allclose(W, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.golden
def test_reservoir_input_list_accumulates_repeated_pairs():
    p = golden(f"{SPEECH}/weights/r_weights_info.txt")
    W = read_weight_list(p, 135, 78)
    # Single connections are +-8; repeated (pre, post) pairs add up to +-16, +-24 (or cancel to 0).
    assert set(np.unique(W).tolist()) <= {-24.0, -16.0, -8.0, 0.0, 8.0, 16.0, 24.0}
    assert np.abs(W).max() > 8.0


@pytest.mark.golden
def test_cnn_trained_weights_differ_by_lr():
    # One Adam step with lr 1e-3 (docs/algorithm.md §6.3): every weight moves by -1e-3, 0 or +1e-3.
    W0 = read_weight_list(golden(f"{CNN}/weights/hidden_info.txt"), 100, 48, complete=True)
    W1 = read_weight_list(golden(f"{CNN}/weights/hidden_info_trained.txt"), 100, 48, complete=True)
    assert np.abs(W1 - W0).max() < 1.1e-3
    c0 = read_conv_weights(golden(f"{CNN}/weights/conv1_info.txt"), 5, 1, 5)
    c1 = read_conv_weights(golden(f"{CNN}/weights/conv1_info_trained.txt"), 5, 1, 5)
    assert np.abs(c1 - c0).max() < 1.1e-3


@pytest.mark.golden
def test_conv_weight_lists():
    p = golden(f"{CNN}/weights/conv1_info.txt")
    w1 = read_conv_weights(p, 5, 1, 5)
    assert w1.shape == (5, 1, 5, 5) and w1.dtype == np.float32
    first_line = raw_text(p).splitlines()[0]
    np.testing.assert_array_equal(w1.ravel(), np.array(first_line.split(), dtype=np.float32))
    w2 = read_conv_weights(golden(f"{CNN}/weights/conv2_info.txt"), 3, 5, 5)
    assert w2.shape == (3, 5, 5, 5)
    with pytest.raises(DataFormatError, match=r"expected 125 values .* found 375"):
        read_conv_weights(golden(f"{CNN}/weights/conv2_info.txt"), 5, 1, 5)


@pytest.mark.golden
def test_cnn_checkpoint():
    p = golden("Result/checkPoint_cnn_best.txt")
    assert checkpoint_size(CNN_CHECKPOINT_ARCH) == 210_840
    ck = read_checkpoint_cnn(p, CNN_CHECKPOINT_ARCH)
    shapes = {k: v.shape for k, v in ck.items()}
    assert shapes == {
        "layer0.weight": (15, 1, 5, 5),
        "layer0.bias": (15,),
        "layer2.weight": (40, 15, 5, 5),
        "layer2.bias": (40,),
        "layer4.weight": (300, 640),
        "layer4.bias": (300,),
        "layer5.weight": (10, 300),
        "layer5.lateral": (10, 10),
        "layer5.bias": (10,),
    }
    assert all(v.dtype == np.float32 for v in ck.values())
    lat = ck["layer5.lateral"]
    np.testing.assert_array_equal(np.diag(lat), 0.0)
    np.testing.assert_array_equal(lat[~np.eye(10, dtype=bool)], -1.0)
    np.testing.assert_array_equal(ck["layer0.bias"], 0.0)
    np.testing.assert_array_equal(ck["layer2.bias"], 0.0)
    # The first conv1 weights, as printed at the start of the file.
    np.testing.assert_allclose(ck["layer0.weight"].ravel()[:3], [-2.004278, -1.082421, -1.183149], rtol=1e-6)
    # A wrong architecture is a count mismatch that states both numbers.
    wrong = [dict(d) for d in CNN_CHECKPOINT_ARCH]
    wrong[4]["out"] = 301
    with pytest.raises(DataFormatError, match=r"expected 211481 values .* found 210840"):
        read_checkpoint_cnn(p, wrong)


@pytest.mark.golden
def test_lyon_matrix():
    L = read_lyon_matrix(golden("test/ti_alpha/0/f1_u10_c0.dat"))
    assert L.shape == (78, 68) and L.dtype == np.float64
    assert np.all(L > 0)
    np.testing.assert_allclose(L[0, :2], [1.7669533e-05, 1.9828383e-05])


@pytest.mark.golden
@pytest.mark.parametrize(
    "name",
    [
        "NMnistConfig.txt",
        "SpikingCNNMnistConfig.txt",
        "SpikingCNNMnistConfig_test.txt",
        "SpikingCNNMnistConfig_test_softmax.txt",
        "SpikingMnistConfig.txt",
        "SpokenLetterConfig_test.txt",
    ],
)
def test_all_configs_parse(name):
    cfg = read_authors_config(golden(f"Config/{name}"))
    assert cfg["layers"][0]["LAYER"] == "DATASPIKING"
    assert cfg["layers"][-1]["NAME"] == "output"
    assert "END_TIME" in cfg["globals"]
    assert all("#" not in v for layer in [cfg["globals"], *cfg["layers"]] for v in layer.values())


@pytest.mark.golden
def test_cnn_test_config():
    cfg = read_authors_config(golden("Config/SpikingCNNMnistConfig_test.txt"))
    g = cfg["globals"]
    assert g["END_TIME"] == "450" and g["LAMBDA_REG"] == "10" and g["BETA_REG"] == "0.4"
    assert g["OPTIMIZER"] == "adam" and g["WEIGHT_LIMIT"] == "8.0"
    assert "NON_LINEARITY" not in g  # inside a '#...#' comment line
    names = [layer["NAME"] for layer in cfg["layers"]]
    assert names == ["data", "conv1", "pooling1", "conv2", "pooling2", "hidden", "output"]
    assert cfg["layers"][3]["KERNEL_AMOUNT"] == "3" and cfg["layers"][5]["NUM_NEURONS"] == "100"
    # refOutputTrainPath is repeated in pooling2: the last value wins and the repeat is recorded.
    assert cfg["layers"][4]["refOutputTrainPath"] == "test/golden/cnn_mnist/spikes/pool2/test/pool2_1.dat"
    assert "refOutputTestPath" not in cfg["layers"][4]
    assert cfg["duplicates"] == [
        {
            "layer": 4,
            "name": "pooling2",
            "key": "refOutputTrainPath",
            "values": [
                "test/golden/cnn_mnist/spikes/pool2/train/pool2_1.dat",
                "test/golden/cnn_mnist/spikes/pool2/test/pool2_1.dat",
            ],
        }
    ]


@pytest.mark.golden
def test_comment_forms_in_real_configs():
    # '#LAMBDA_REG = 10;#' switches a setting off; the full CNN config has neither LAMBDA_REG nor BETA_REG.
    full = read_authors_config(golden("Config/SpikingCNNMnistConfig.txt"))
    assert "LAMBDA_REG" not in full["globals"] and "CROP" not in full["globals"]
    assert full["globals"]["SCALE"] == "12" and full["globals"]["DISTORTION"] == "3.4"
    speech = read_authors_config(golden("Config/SpokenLetterConfig_test.txt"))
    assert speech["layers"][1]["reservoirDim"] == "3 x 3 x 15"
    assert speech["layers"][1]["weightConnect"] == "32"  # comment after the ';' is dropped


# ==================================================================================================
# Part 2: reliability (synthetic files, always run)
# ==================================================================================================

SMALL_ARCH = [
    {"kind": "conv", "out": 2, "in": 1, "k": 2},
    {"kind": "pool"},
    {"kind": "fc", "out": 3, "in": 2, "lateral": True},
]  # 8 + 2 + 6 + 9 + 3 = 28 floats


def _last_token_start(content: bytes) -> int:
    body = content.rstrip()
    return max(body.rfind(c) for c in (b" ", b"\t", b"\n")) + 1


@dataclass(frozen=True)
class Case:
    name: str
    read: Callable[[Path], object]
    content: bytes
    # Every truncation to fewer than this many bytes is detectably broken. (A cut inside the last number
    # of a format without an end marker, e.g. "0.25" -> "0.2", leaves a valid file and cannot be caught.)
    trunc_limit: int
    check: Callable[[object], bool]


def _cases() -> list[Case]:
    sparse = b"-1\t-1\n0\t3\n2\t5\n2\t7\n6\t19\n-1\t-1\n"
    dense_tokens = [str((i * 7) % 3 % 2) for i in range(2 * 3 * 2 * 2)]
    dense = "\n".join(" ".join(dense_tokens[c * 12 : (c + 1) * 12]) for c in range(2)).encode() + b"\n"
    wl = "".join(
        f"{post * 4 + pre}\t{'input_' if pre % 2 else 'hidden_0_'}{pre}\toutput_{post}"
        f"\t{0.25 * (pre - post):.6f}\n"
        for pre in range(4)
        for post in range(3)
    ).encode()
    conv = b"0.1 -0.2 0.3 -0.4 1.5 -0 2e-3 -7.25\n"
    ckpt = " ".join(f"{(i % 7 - 3) * 0.5:.6f}" for i in range(28)).encode()
    rows = [b"   ".join(b"%.7e" % (1e-5 * (r + 1) * (c + 1)) for c in range(5)) for r in range(4)]
    lyon = b"\n".join(rows) + b"\n"
    config = (
        b"#Comment#\nEND_TIME = 450;   #The spike train duration#\nOPTIMIZER = adam;\n\n"
        b"[\nLAYER = DATASPIKING;\nNAME  = data;\nNUM_NEURONS = 784;\n]\n\n"
        b"[\nLAYER = SPIKING;\nNAME = output;\n#x = 1;#\nVTH = 5;\n]\n"
    )
    return [
        Case("sparse", lambda p: read_sparse_spikes(p, 7, 20), sparse, len(sparse.rstrip()),
             lambda r: r.shape == (20, 7) and r.dtype == bool),
        Case("dense", lambda p: read_dense_spike_map(p, 2, 3, 2, 2), dense, len(dense.rstrip()),
             lambda r: r.shape == (3, 2, 2, 2) and r.dtype == bool),
        Case("weights", lambda p: read_weight_list(p, 3, 4, complete=True), wl, _last_token_start(wl),
             lambda r: r.shape == (3, 4) and r.dtype == np.float32 and np.isfinite(r).all()),
        Case("conv", lambda p: read_conv_weights(p, 2, 1, 2), conv, _last_token_start(conv),
             lambda r: r.shape == (2, 1, 2, 2) and np.isfinite(r).all()),
        Case("checkpoint", lambda p: read_checkpoint_cnn(p, SMALL_ARCH), ckpt, _last_token_start(ckpt),
             lambda r: sorted(r) == sorted(["layer0.weight", "layer0.bias", "layer2.weight",
                                            "layer2.lateral", "layer2.bias"])),
        Case("lyon", lambda p: read_lyon_matrix(p, n_channels=4), lyon, _last_token_start(lyon),
             lambda r: r.shape[0] == 4 and r.dtype == np.float64 and np.isfinite(r).all()),
        Case("config", read_authors_config, config, config.rindex(b"]"),
             lambda r: set(r) == {"globals", "layers", "duplicates"}),
    ]


CASES = _cases()
CASE_IDS = [c.name for c in CASES]
NUMERIC_CASES = [c for c in CASES if c.name in ("weights", "conv", "checkpoint", "lyon")]


def _write(tmp_path: Path, data: bytes, name: str = "f.dat") -> Path:
    p = tmp_path / name
    gz = Path(str(p) + ".gz")
    if gz.exists():
        gz.unlink()
    p.write_bytes(data)
    return p


def _expect_error(case: Case, p: Path, match: str | None = None) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        case.read(p)
    msg = str(info.value)
    assert str(p) in msg, msg
    if match is not None:
        assert re.search(match, msg), msg
    return info.value


def _error_or_valid(case: Case, p: Path) -> None:
    """The property every reader must have on arbitrary input: a valid result or a DataFormatError."""
    try:
        result = case.read(p)
    except DataFormatError as e:
        assert str(p) in str(e), str(e)
    else:
        assert case.check(result), result


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_synthetic_files_are_valid(case, tmp_path):
    p = _write(tmp_path, case.content)
    assert case.check(case.read(p))
    # ... also when only the .gz copy exists and the plain name is given.
    p.unlink()
    Path(str(p) + ".gz").write_bytes(gzip.compress(case.content))
    assert case.check(case.read(p))


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_missing_and_unreadable_files(case, tmp_path):
    missing = tmp_path / "nope.dat"
    _expect_error(case, missing, "file not found")
    _expect_error(case, tmp_path, "not a regular file")
    _expect_error(case, _write(tmp_path, b""), None)


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
# 40 examples x 7 readers: every cut point of these short files is covered often enough.
@settings(max_examples=40, **PROPERTY)
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_raise(case, tmp_path, frac):
    cut = int(frac * case.trunc_limit)
    if case.name == "config":  # cut inside the last [ ... ] block: it is left unclosed
        start = case.content.rindex(b"[") + 1
        cut = start + int(frac * (case.trunc_limit - start))
    _expect_error(case, _write(tmp_path, case.content[:cut]))


REAL_FILES = [  # (reader name, golden file, reader) for truncating copies of real files
    ("sparse", "test/cnn_mnist/input_spikes_0_5.dat", lambda p: read_sparse_spikes(p, 784, 450)),
    ("dense", f"{CNN}/spikes/conv2/train/conv2_1.dat", lambda p: read_dense_spike_map(p, 3, 450, 8, 8)),
    ("weights", f"{CNN}/weights/hidden_info.txt", lambda p: read_weight_list(p, 100, 48, complete=True)),
    ("conv", f"{CNN}/weights/conv2_info.txt", lambda p: read_conv_weights(p, 3, 5, 5)),
    ("checkpoint", "Result/checkPoint_cnn_best.txt", lambda p: read_checkpoint_cnn(p, CNN_CHECKPOINT_ARCH)),
    ("lyon", "test/ti_alpha/0/f1_u10_c0.dat", read_lyon_matrix),
    ("config", "Config/SpikingCNNMnistConfig_test.txt", read_authors_config),
]


@pytest.mark.golden
@pytest.mark.reliability
@pytest.mark.parametrize("kind,rel,read", REAL_FILES, ids=[r[0] for r in REAL_FILES])
# 10 examples x 7 real files (the checkpoint copy is 2 MB, so few examples).
@settings(max_examples=10, **PROPERTY)
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_real_files_raise(kind, rel, read, tmp_path, frac):
    content = raw_text(golden(rel)).encode()
    if kind in ("sparse", "dense"):
        lo, hi = 0, len(content.rstrip())
    elif kind == "config":
        lo, hi = content.rindex(b"[") + 1, content.rindex(b"]")
    else:
        lo, hi = 0, _last_token_start(content)
    p = _write(tmp_path, content[: lo + int(frac * (hi - lo))])
    with pytest.raises(DataFormatError) as info:
        read(p)
    assert str(p) in str(info.value)


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
# 60 examples x 7 readers of arbitrary bytes.
@settings(max_examples=60, **PROPERTY)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash(case, tmp_path, data):
    _error_or_valid(case, _write(tmp_path, data))


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
# 80 examples x 7 readers: a slice of the valid file replaced by format-like characters.
@settings(max_examples=80, **PROPERTY)
@given(
    data=st.data(),
    junk=st.text(alphabet="0123456789-+.eE_\t\n []=;#nafiNAF\x00\u00e9", max_size=12),
)
def test_mutated_files_never_crash(case, tmp_path, data, junk):
    n = len(case.content)
    i = data.draw(st.integers(0, n), label="start")
    j = data.draw(st.integers(i, min(n, i + 8)), label="end")
    mutated = case.content[:i] + junk.encode("utf-8") + case.content[j:]
    _error_or_valid(case, _write(tmp_path, mutated))


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
# 20 examples x 7 readers: gzip streams cut short.
@settings(max_examples=20, **PROPERTY)
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_gzip_raises(case, tmp_path, frac):
    packed = gzip.compress(case.content)
    _expect_error(case, _write(tmp_path, packed[: int(frac * len(packed))]))


@pytest.mark.reliability
@pytest.mark.parametrize("case", NUMERIC_CASES, ids=[c.name for c in NUMERIC_CASES])
# 30 examples x 4 float readers: one number replaced by a NaN/inf spelling or an overflow.
@settings(max_examples=30, **PROPERTY)
@given(
    data=st.data(),
    bad=st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e400"]),
)
def test_nan_tokens_raise(case, tmp_path, data, bad):
    content = case.content.decode()
    spans = [
        m.span()
        for m in re.finditer(r"(?<![\w_])-?\d+\.?\d*(?:e[-+]?\d+)?(?![\w_])", content)
        if case.name != "weights" or content[m.end() : m.end() + 1] == "\n"  # the weight column
    ]
    a, b = data.draw(st.sampled_from(spans), label="token")
    mutated = (content[:a] + bad + content[b:]).encode()
    _expect_error(case, _write(tmp_path, mutated), r"non-finite|float32")


@pytest.mark.reliability
# 40 examples: any first line other than "-1<TAB>-1" is a missing header.
@settings(max_examples=40, **PROPERTY)
@given(a=st.integers(-5, 10**6), b=st.integers(-5, 10**6))
def test_sparse_wrong_header(tmp_path, a, b):
    if (a, b) == (-1, -1):
        return
    p = _write(tmp_path, f"{a}\t{b}\n0\t1\n-1\t-1\n".encode())
    with pytest.raises(DataFormatError, match="header") as info:
        read_sparse_spikes(p, 7, 20)
    assert str(p) in str(info.value)


@pytest.mark.reliability
# 40 examples: neuron indices at or far beyond the layer size (up to 10**30) never allocate, always raise.
@settings(max_examples=40, **PROPERTY)
@given(neuron=st.integers(7, 10**30))
def test_sparse_neuron_out_of_range(tmp_path, neuron):
    p = _write(tmp_path, f"-1\t-1\n0\t1\n{neuron}\t2\n-1\t-1\n".encode())
    with pytest.raises(DataFormatError) as info:
        read_sparse_spikes(p, 7, 20)
    assert str(p) in str(info.value)


def test_sparse_times_beyond_T_are_dropped(tmp_path):
    p = _write(tmp_path, b"-1\t-1\n1\t3\n1\t20\n2\t10**9\n-1\t-1\n".replace(b"10**9", b"1000000000"))
    s = read_sparse_spikes(p, 7, 20)
    assert [tuple(x) for x in np.argwhere(s)] == [(3, 1)]
    for body, what in [
        (b"-1\t-1\n1\t-3\n-1\t-1\n", "negative"),
        (b"-1\t-1\n1\t3\n-1\t-1\n4\t4\n", "after the closing"),
        (b"-1\t-1\n1\t3\n", "missing closing"),
        (b"-1\t-1\n1\t3\t5\n-1\t-1\n", "two integers"),
    ]:
        with pytest.raises(DataFormatError, match=what):
            read_sparse_spikes(_write(tmp_path, body), 7, 20)


@pytest.mark.reliability
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("dense", "conv", "checkpoint")],
                         ids=["dense", "conv", "checkpoint"])
# 20 examples x 3 count-checked readers: extra values (up to 10,000) are a count error stating both numbers.
@settings(max_examples=20, **PROPERTY)
@given(extra=st.integers(1, 10_000))
def test_oversized_counts_raise(case, tmp_path, extra):
    filler = b" 0" if case.name == "dense" else b" 0.5"
    content = case.content.rstrip() + filler * extra + b"\n"
    _expect_error(case, _write(tmp_path, content), r"expected \d+ (tokens|values).*found \d+")


@pytest.mark.reliability
# 40 examples: pre/post indices at or beyond the layer sizes, up to 18 digits.
@settings(max_examples=40, **PROPERTY)
@given(pre=st.integers(0, 10**18 - 1), post=st.integers(0, 10**18 - 1))
def test_weight_list_index_out_of_range(tmp_path, pre, post):
    p = _write(tmp_path, f"0\tinput_{pre}\toutput_{post}\t0.5\n".encode())
    if pre < 4 and post < 3:
        assert read_weight_list(p, 3, 4)[post, pre] == np.float32(0.5)
    else:
        with pytest.raises(DataFormatError, match="out of range") as info:
            read_weight_list(p, 3, 4)
        assert str(p) in str(info.value)


def test_weight_list_details(tmp_path):
    p = _write(tmp_path, b"0\tstack2line_1\thidden_2\t0.5\n1\tstack2line_1\thidden_2\t0.25\n")
    W = read_weight_list(p, 3, 2)
    assert W[2, 1] == np.float32(0.75) and W.sum() == np.float32(0.75)
    with pytest.raises(DataFormatError, match="pairs present"):
        read_weight_list(p, 3, 2, complete=True)
    for body, what in [
        (b"0\tinput\toutput_1\t0.5\n", "does not end in"),
        (b"x\tinput_0\toutput_1\t0.5\n", "not an integer"),
        (b"0\tinput_0\toutput_1\t0.5\t7\n", "4 columns"),
        (b"0\tinput_0\toutput_1\t1_0\n", "non-numeric"),
        (b"0\tinput_0\toutput_1\t1e39\n", "float32"),
        (b"\n\n", "no weight lines"),
    ]:
        with pytest.raises(DataFormatError, match=what):
            read_weight_list(_write(tmp_path, body), 3, 2)


def test_dense_map_bad_tokens(tmp_path):
    ok = b"0 1 1 0\n"
    m = read_dense_spike_map(_write(tmp_path, ok), 1, 1, 2, 2)
    assert m.tolist() == [[[[False, True], [True, False]]]]
    for body, what in [
        (b"0 1 10\n", "single"),
        (b"0 1 2 0\n", "not '0', '1'"),
        (b"0 1 1\n", "expected 4 tokens"),
    ]:
        with pytest.raises(DataFormatError, match=what):
            read_dense_spike_map(_write(tmp_path, body), 1, 1, 2, 2)


def test_dense_map_large_synthetic_is_fast(tmp_path):
    rng = np.random.default_rng(0)
    bits = rng.random((5, 450, 576)) < 0.02
    text = "\n".join(" ".join("1" if b else "0" for b in ch.ravel()) for ch in bits) + "\n"
    p = _write(tmp_path, text.encode())
    t0 = time.perf_counter()
    m = read_dense_spike_map(p, 5, 450, 24, 24)
    assert time.perf_counter() - t0 < 5.0
    np.testing.assert_array_equal(m, bits.reshape(5, 450, 24, 24).transpose(1, 0, 2, 3))


def test_lyon_ragged_and_row_count(tmp_path):
    for body, what in [
        (b"1 2 3\n4 5\n", "ragged"),
        (b"1 2\n3 4\n5 6\n", "expected 2 rows"),
        (b"1 2\n3 x\n", "non-numeric"),
    ]:
        with pytest.raises(DataFormatError, match=what):
            read_lyon_matrix(_write(tmp_path, body), n_channels=2)


def test_checkpoint_and_size_arguments(tmp_path):
    p = _write(tmp_path, b"1 2 3")
    with pytest.raises(ConfigError):
        read_checkpoint_cnn(p, [{"kind": "rnn", "out": 1}])
    with pytest.raises(ConfigError):
        read_checkpoint_cnn(p, [{"kind": "fc", "out": -1, "in": 2}])
    with pytest.raises(ConfigError):
        read_sparse_spikes(p, 0, 10)
    with pytest.raises(ConfigError):
        read_dense_spike_map(p, 1, 1, 1, True)
    # A file that is too large for the expected contents is refused before it is read.
    big = _write(tmp_path, b"0.5 " * 100_000)
    with pytest.raises(DataFormatError, match="bytes"):
        read_conv_weights(big, 1, 1, 1)


def test_config_errors(tmp_path):
    for body, what in [
        (b"A = 1;\n#unterminated\n", "unterminated"),
        (b"A = 1\n[\nB = 2;\n]\n", "missing ';'"),
        (b"A 1;\n", "no '='"),
        (b"[\nA = 1;\n[\nB = 2;\n]\n", "inside the layer block"),
        (b"A = 1;\n]\n", "without a matching"),
        (b"[\nA = 1;\n", "never closed"),
        (b"#only a comment#\n", "no settings"),
        (b"A B = 1;\n", "invalid key"),
        (b"\xff\xfe = 1;", "not a text file"),
    ]:
        with pytest.raises(DataFormatError, match=what):
            read_authors_config(_write(tmp_path, body))
    cfg = read_authors_config(_write(tmp_path, b"A = 1; #c# A = 2;\nB=#x# 3 ;\n[\n]\n"))
    assert cfg["globals"] == {"A": "2", "B": "3"}
    assert cfg["layers"] == [{}]
    assert cfg["duplicates"] == [{"layer": None, "name": None, "key": "A", "values": ["1", "2"]}]
