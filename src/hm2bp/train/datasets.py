"""Spike-raster datasets for training: labels plus a function from sample indices to input spikes.

Every dataset gives ``get(indices, epoch) -> bool [T, B, N_in]``. All randomness (Poisson rasters,
augmentation warps) is a pure function of (seed, split, epoch, sample index): each draw uses its own
``torch.Generator`` seeded from those numbers, so a batch does not depend on which samples share it and a
resumed run sees exactly the inputs of an uninterrupted one, with no data RNG state to save.

- ``digits`` / ``mnist`` / ``emnist``: Bernoulli rate code of the pixels (docs/algorithm.md §1.5). ``encoding="fixed"``
  draws one raster per sample (the same in every epoch, as the authors' load-time rasters);
  ``"fresh"`` draws a new one each epoch. With ``augment`` the training images are warped each epoch
  (one warp shared by all samples of the epoch by default, as the authors) and re-encoded.
- ``nmnist``: event files binned into a raster (deterministic); the training list is shuffled once at load.
  With ``augment`` each training raster is shifted by a random whole-pixel offset each epoch.
- ``ti46`` / ``fsdd``: Lyon-ear cochleagram + BSA (deterministic); TI46 may also be given as the
  authors' preprocessed ``.dat`` cochleagrams.

Deterministic rasters are cached in memory (bit-packed) up to ``data.cache_mb``.

A validation split (``data.n_val`` / ``data.val_fraction``) is held out of the (first ``n_train``)
training samples by :func:`validation_split`: a seeded, sorted pair of disjoint index sets that depends on
the pool size, the size asked for and ``data.split_seed`` only (not on ``train.seed``, the rank or the
epoch). Its samples keep fixed, unaugmented rasters (split "val").
"""

from __future__ import annotations

import typing
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..arch import parse as parse_architecture
from ..config import DataConfig, RunConfig
from ..errors import ConfigError, DataFormatError
from .input_checks import check_dataset_spikes, warn_if_silent

__all__ = ["FileSpikes", "ImageSpikes", "SpikeDataset", "Splits", "collate_time_major", "hold_out_validation", "load_datasets", "load_splits",
           "sample_generator", "validation_size", "validation_split"]


def sample_generator(*keys: int | str) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints/strings (stable across runs and platforms)."""
    ints = [k % 2**64 if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    state = np.random.SeedSequence(ints).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


class SpikeDataset(torch.utils.data.Dataset):
    """Base class: ``labels`` (int64 ``[N]``), ``n_classes``, ``n_inputs``, ``T`` and :meth:`get`.

    Also a map-style ``torch.utils.data.Dataset``: item ``i`` is ``(spikes bool [T, n_inputs], label)`` of
    epoch :attr:`epoch` (:meth:`set_epoch`); batch items time-major with :func:`collate_time_major`, e.g.
    ``DataLoader(ds, batch_size=32, collate_fn=collate_time_major)`` gives ``([T, B, n_inputs], [B])``.
    The trainer itself calls :meth:`get` on whole batches (faster: one encoding call per batch).
    """

    def __init__(self, labels: np.ndarray | torch.Tensor, n_classes: int, n_inputs: int, T: int, name: str) -> None:
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.n_classes = int(n_classes)
        self.n_inputs = int(n_inputs)
        self.T = int(T)
        self.name = name
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} samples")
        i = int(i) % n
        return self.get([i], self.epoch)[:, 0], int(self.labels[i])

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose rasters ``dataset[i]`` returns (fresh encodings and augmentation vary by epoch)."""
        self.epoch = int(epoch)

    def get(self, indices: torch.Tensor | Sequence[int], epoch: int = 0) -> torch.Tensor:
        """Input spikes ``bool [T, B, n_inputs]`` of samples ``indices`` in ``epoch``."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray, split: str) -> SpikeDataset:
        """The samples ``indices`` (in that order) as a dataset of their own, playing the role ``split``."""
        raise NotImplementedError


def collate_time_major(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` collate function: items ``(spikes [T, ...], label)`` → ``(spikes [T, B, ...], labels [B])``,
    the time-major layout the networks take."""
    xs, ys = zip(*items)
    return torch.stack(xs, dim=1), torch.as_tensor(ys, dtype=torch.int64)


class _PackedCache:
    """Bit-packed rasters of deterministic samples, up to a byte budget."""

    def __init__(self, budget_mb: float) -> None:
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.store: dict[int, np.ndarray] = {}

    def get(self, i: int, shape: tuple[int, int]) -> np.ndarray | None:
        packed = self.store.get(i)
        if packed is None:
            return None
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def put(self, i: int, raster: np.ndarray) -> None:
        packed = np.packbits(raster.reshape(-1))
        if self.used + packed.nbytes <= self.budget:
            self.store[i] = packed
            self.used += packed.nbytes


class ImageSpikes(SpikeDataset):
    """Poisson-coded images (digits, MNIST, EMNIST).

    Args:
        images: uint8 ``[N, H, W]``; labels: int64 ``[N]``.
        split: "train" or "test" (part of the seeds; augmentation applies to "train" only).
        seed: the run's seed.
        encoding: "fixed" or "fresh" (training split only; test rasters are always fixed).
        augment, shared_field: see :class:`~hm2bp.config.DataConfig`.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int, T: int, *, name: str, split: str,
                 seed: int, encoding: str = "fixed", augment: bool = False, shared_field: bool = True,
                 max_rate_div: float = 5.5, cache_mb: float = 1024.0) -> None:
        images = np.asarray(images)
        super().__init__(labels, n_classes, int(np.prod(images.shape[1:])), T, name)
        self.images = torch.as_tensor(images)
        self.split = split
        self.seed = seed
        self.augment = augment and split == "train"
        # test rasters are always the fixed ones drawn "at load" (docs/algorithm.md §1.5)
        self.fresh = split == "train" and (encoding == "fresh" or self.augment)
        self.shared_field = shared_field
        self.max_rate_div = max_rate_div
        # fixed rasters are encoded once, on first use, and kept bit-packed while the budget lasts
        self._cache = _PackedCache(cache_mb)
        self._kwargs = {"n_classes": n_classes, "T": T, "name": name, "seed": seed, "encoding": encoding,
                        "augment": augment, "shared_field": shared_field, "max_rate_div": max_rate_div,
                        "cache_mb": cache_mb}

    def subset(self, indices: np.ndarray, split: str) -> ImageSpikes:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSpikes(self.images[idx].numpy(), self.labels[idx].numpy(), split=split,
                           **self._kwargs)  # type: ignore[arg-type]

    def _encode(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        from ..encoding import augment as warp
        from ..encoding import poisson_encode

        imgs = self.images[idx]
        if self.augment:
            x = imgs.to(torch.float32)
            if self.shared_field:
                x = warp(x, sample_generator(self.seed, "augment", epoch), shared_field=True)
            else:
                x = torch.cat([warp(x[k : k + 1], sample_generator(self.seed, "augment", epoch, int(n)))
                               for k, n in enumerate(idx.tolist())])
            imgs_in: torch.Tensor = x
        else:
            imgs_in = imgs
        tag: int | str = epoch if self.fresh else "fixed"
        generators = [sample_generator(self.seed, self.split, tag, int(n)) for n in idx.tolist()]
        return poisson_encode(imgs_in, self.T, generators, max_rate_div=self.max_rate_div)

    def get(self, indices: torch.Tensor | Sequence[int], epoch: int = 0) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if self.fresh:
            return self._encode(idx, epoch)
        out = torch.empty((self.T, len(idx), self.n_inputs), dtype=torch.bool)
        missing = []
        for k, i in enumerate(idx.tolist()):
            raster = self._cache.get(i, (self.T, self.n_inputs))
            if raster is None:
                missing.append(k)
            else:
                out[:, k] = torch.from_numpy(raster)
        if missing:
            encoded = self._encode(idx[missing], epoch)
            out[:, missing] = encoded
            for j, k in enumerate(missing):
                self._cache.put(int(idx[k]), encoded[:, j].numpy())
        return out


#: ``augment(raster, generator) -> raster``: a random transform of one deterministic training raster.
RasterAugment = Callable[[np.ndarray, torch.Generator], np.ndarray]


class FileSpikes(SpikeDataset):
    """Samples that are files turned into a deterministic raster by ``to_raster(path) -> bool [T, N]``.

    With ``augment`` (training split only) each epoch transforms the cached raster of sample ``i`` with a
    generator seeded by (seed, "augment", epoch, i).
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | np.ndarray, n_classes: int, n_inputs: int, T: int,
                 to_raster: Callable[[Path], np.ndarray], *, name: str, cache_mb: float = 1024.0,
                 split: str = "train", augment: RasterAugment | None = None, seed: int = 0) -> None:
        super().__init__(np.asarray(labels, dtype=np.int64), n_classes, n_inputs, T, name)
        self.paths = list(paths)
        self.to_raster = to_raster
        self._cache = _PackedCache(cache_mb)
        self._cache_mb = cache_mb
        self.split = split
        self.augment = augment
        self.seed = seed

    def subset(self, indices: np.ndarray, split: str) -> FileSpikes:
        idx = [int(i) for i in indices]
        return FileSpikes([self.paths[i] for i in idx], self.labels[idx].numpy(), self.n_classes, self.n_inputs,
                          self.T, self.to_raster, name=self.name, cache_mb=self._cache_mb, split=split,
                          augment=self.augment, seed=self.seed)

    def get(self, indices: torch.Tensor | Sequence[int], epoch: int = 0) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.int64).tolist()
        out = np.zeros((self.T, len(idx), self.n_inputs), dtype=bool)
        for k, i in enumerate(idx):
            r = self._cache.get(i, (self.T, self.n_inputs))
            if r is None:
                r = np.asarray(self.to_raster(self.paths[i]), dtype=bool)
                if r.shape != (self.T, self.n_inputs):
                    raise DataFormatError(self.paths[i],
                                          f"raster of shape {r.shape}, expected {(self.T, self.n_inputs)}")
                self._cache.put(i, r)
            if self.augment is not None and self.split == "train":
                r = self.augment(r, sample_generator(self.seed, "augment", epoch, i))
            out[:, k] = r
        return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------------
# Loading by name
# --------------------------------------------------------------------------------------------------
#: Output classes per EMNIST subset ('letters' labels are 1…26, so it needs 27 outputs).
EMNIST_CLASSES = {"balanced": 47, "byclass": 62, "bymerge": 47, "digits": 10, "letters": 27, "mnist": 10}


def _limit(n: int, limit: int) -> int:
    return n if limit <= 0 else min(n, limit)


def _want(limit: int) -> int | None:
    """Images to read from an IDX file: only those used (a small gzip can inflate to gigabytes)."""
    return limit if limit > 0 else None


#: Datasets ``hm2bp download NAME DIR`` can fetch (hm2bp.data.download.DATASETS).
_DOWNLOADABLE = ("mnist", "emnist", "nmnist", "fsdd")


def _need_dir(d: DataConfig, what: str) -> Path:
    get = (f"; to fetch it: hm2bp download {d.dataset} DIR, then --data-dir DIR" if d.dataset in _DOWNLOADABLE
           else "")
    if not d.data_dir:
        raise ConfigError(f"dataset {d.dataset!r} needs a data folder: pass --data-dir DIR (or data.data_dir=DIR) "
                          f"pointing at {what}{get}")
    root = Path(d.data_dir).expanduser()
    if not root.is_dir():
        raise DataFormatError(root, f"data folder not found; it should hold {what}{get}")
    return root


def _permuted(items: list, seed: int) -> list:
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in perm]


def _image_sets(cfg: RunConfig) -> tuple[SpikeDataset, SpikeDataset]:
    d, T, seed = cfg.data, cfg.model.T, cfg.train.seed
    if d.dataset == "digits":
        from ..data.digits import load_digits

        tr = load_digits("train", d.digits_n_test, d.split_seed)
        te = load_digits("test", d.digits_n_test, d.split_seed)
        n_classes = 10
    elif d.dataset == "mnist":
        from ..data.idx import load_mnist

        root = _need_dir(d, "the MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                           "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)")
        tr, te = load_mnist(root, "train", _want(d.n_train)), load_mnist(root, "test", _want(d.n_test))
        n_classes = 10
    else:  # emnist
        from ..data.idx import load_emnist

        sub = d.emnist_subset
        root = _need_dir(d, f"the EMNIST files emnist-{sub}-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte[.gz] "
                           f"and emnist-{sub}-mapping.txt (from the official gzip.zip)")
        tr, te = load_emnist(root, "train", sub, _want(d.n_train))[:2], load_emnist(root, "test", sub, _want(d.n_test))[:2]
        n_classes = EMNIST_CLASSES[sub]
    common = dict(n_classes=n_classes, T=T, name=d.dataset, seed=seed, max_rate_div=d.max_rate_div,
                  cache_mb=d.cache_mb)
    n_tr, n_te = _limit(len(tr[1]), d.n_train), _limit(len(te[1]), d.n_test)
    train = ImageSpikes(tr[0][:n_tr], tr[1][:n_tr], split="train", encoding=d.encoding, augment=d.augment,
                        shared_field=d.augment_shared_field, **common)  # type: ignore[arg-type]
    test = ImageSpikes(te[0][:n_te], te[1][:n_te], split="test", encoding=d.encoding, **common)  # type: ignore[arg-type]
    return train, test


def _nmnist_sets(cfg: RunConfig) -> tuple[SpikeDataset, SpikeDataset]:
    from ..data.nmnist import RandomShift, load_nmnist, nmnist_raster

    d, T = cfg.data, cfg.model.T
    root = _need_dir(d, "the N-MNIST recordings as Train/<digit>/<n>.bin and Test/<digit>/<n>.bin "
                       "(the official Train.zip and Test.zip, unpacked)")

    def to_raster(p: Path) -> np.ndarray:  # read → stabilise (docs/algorithm.md §1.5 step 2) → bin
        return nmnist_raster(p, T=T, bin_us=d.nmnist_bin_us)

    augment = RandomShift(d.augment_shift) if d.augment else None  # FileSpikes applies it to "train" only
    out = []
    for split, limit in (("train", d.n_train), ("test", d.n_test)):
        items = _permuted(load_nmnist(root, split), d.split_seed)  # the authors shuffle once at load
        items = items[: _limit(len(items), limit)]
        out.append(FileSpikes([p for p, _ in items], [lab for _, lab in items], 10, 2312, T, to_raster,
                              name="nmnist", cache_mb=d.cache_mb / 2, split=split, augment=augment,
                              seed=cfg.train.seed))
    return out[0], out[1]


def _cochleagram(path: Path) -> np.ndarray:
    from ..data.speech import lyon_features, read_audio, read_lyon_text

    if path.suffix.lower() == ".dat":
        return read_lyon_text(path)
    samples, rate = read_audio(path)
    return lyon_features(samples, rate)


def _speech_sets(cfg: RunConfig) -> tuple[SpikeDataset, SpikeDataset]:
    from ..data.feature_cache import cached_raster, speech_params
    from ..data.speech import load_fsdd, load_speech_folder
    from ..encoding import bsa_encode

    d, T = cfg.data, cfg.model.T
    n_in = 78

    def features(p: Path) -> np.ndarray:
        coch = _cochleagram(p)
        if coch.shape[0] != n_in:
            raise DataFormatError(p, f"cochleagram has {coch.shape[0]} channels, expected {n_in}")
        return warn_if_silent(p, bsa_encode(coch, T), f"{coch.shape[1]} frames of 16 ms")

    params = speech_params(T, n_in)

    def to_raster(p: Path) -> np.ndarray:  # Lyon + BSA take ~0.3 s per utterance: cached on disk
        return cached_raster(p, params, features)

    out, names = [], None
    for split, limit in (("train", d.n_train), ("test", d.n_test)):
        if d.dataset == "fsdd":
            root = _need_dir(d, "the Free Spoken Digit Dataset's recordings/ folder ({digit}_{speaker}_{index}.wav)")
            items = [(p, lab) for p, lab, _ in load_fsdd(root, split)]
            n_classes = 10
        else:
            root = _need_dir(d, "TI46-Alpha as train/<class>/<utterance>.wav|.sph|.dat and test/<class>/…")
            sub = root / split
            try:  # every split is numbered by the training split's class names
                items, names = load_speech_folder(sub, classes=names)
            except DataFormatError:
                items, names = load_speech_folder(sub, extensions={".dat"}, classes=names)
            n_classes = len(names)
        items = _permuted(items, d.split_seed)
        items = items[: _limit(len(items), limit)]
        out.append(FileSpikes([p for p, _ in items], [lab for _, lab in items], n_classes, n_in, T, to_raster,
                              name=d.dataset, cache_mb=d.cache_mb / 2))
    return out[0], out[1]


def validation_size(n_pool: int, d: DataConfig) -> int:
    """How many of ``n_pool`` training samples ``d`` holds out for validation (0 = no split)."""
    n = d.n_val if d.n_val else round(d.val_fraction * n_pool)
    if n and not 0 < n < n_pool:
        key = "n_val" if d.n_val else "val_fraction"
        raise ConfigError(f"data.{key}: the validation split takes {n} of the {n_pool} training samples; it must "
                          f"leave at least one to train on")
    return n


def validation_split(n_pool: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train, val)`` covering ``0 … n_pool − 1``, ``len(val) = n_val``.

    A pure function of its arguments: the same split on every rank, on resume and for every ``train.seed``.
    """
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(b"validation")])).permutation(n_pool)
    val = np.sort(perm[:n_val])
    keep = np.ones(n_pool, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


class Splits(typing.NamedTuple):
    """The datasets of a run: ``val`` is None without a validation split."""

    train: SpikeDataset
    val: SpikeDataset | None
    test: SpikeDataset


def hold_out_validation(pool: SpikeDataset, test: SpikeDataset, d: DataConfig) -> Splits:
    """The splits of a training pool: the validation samples of ``d`` (``n_val`` / ``val_fraction``, the
    seeded :func:`validation_split`) held out of ``pool``, or no validation set without a split."""
    n_val = validation_size(len(pool), d)
    if not n_val:
        return Splits(pool, None, test)
    tr_idx, val_idx = validation_split(len(pool), n_val, d.split_seed)
    return Splits(pool.subset(tr_idx, "train"), pool.subset(val_idx, "val"), test)


def load_splits(cfg: RunConfig) -> Splits:
    """Training, validation (or None) and test sets of a run, checked against the architecture."""
    pool, test = _load_pool(cfg)
    return hold_out_validation(pool, test, cfg.data)


def load_datasets(cfg: RunConfig) -> tuple[SpikeDataset, SpikeDataset]:
    """Training set (without any validation samples) and test set of a run."""
    s = load_splits(cfg)
    return s.train, s.test


def _load_pool(cfg: RunConfig) -> tuple[SpikeDataset, SpikeDataset]:
    """All (first ``n_train``) training samples and the test set, checked against the architecture."""
    name = cfg.data.dataset
    if name in ("digits", "mnist", "emnist"):
        train, test = _image_sets(cfg)
    elif name == "nmnist":
        train, test = _nmnist_sets(cfg)
    else:
        train, test = _speech_sets(cfg)
    n_in = parse_architecture(cfg.model.arch).n_inputs
    if n_in != train.n_inputs:
        raise ConfigError(f"model.arch {cfg.model.arch!r} takes {n_in} inputs but dataset {name!r} gives "
                          f"{train.n_inputs}")
    if cfg.model.n_classes != train.n_classes:
        raise ConfigError(f"model.arch {cfg.model.arch!r} has {cfg.model.n_classes} outputs but dataset {name!r} has "
                          f"{train.n_classes} classes")
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"dataset {name!r}: empty training or test set (n_train={len(train)}, n_test={len(test)})")
    check_dataset_spikes(train, "training")  # reliability: refuse inputs that train on nothing
    return train, test

