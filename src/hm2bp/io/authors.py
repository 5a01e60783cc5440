"""Readers for the file formats of the HM2-BP authors' CUDA code (docs/algorithm.md §6.2).

Every reader returns numpy arrays and reports *every* problem with a file (missing, unreadable,
truncated, corrupt, of the wrong size) as one :class:`hm2bp.errors.DataFormatError` that names the file
and the problem. No raw ``ValueError``/``IndexError``/``UnicodeDecodeError`` escapes, and nothing is
allocated from a size read out of a file before that size has been checked against what the caller
expects. Wrong *arguments* (a negative size, an unknown layer kind) are the caller's fault and raise
:class:`hm2bp.errors.ConfigError`.

Compressed copies are read transparently: if ``path`` does not exist but ``path + ".gz"`` does, that is
read instead; any file that starts with the gzip magic bytes is decompressed.

Readers:

* :func:`read_sparse_spikes` -- ``-1<TAB>-1`` framed ``neuron<TAB>time`` lists -> bool ``[T, N]``.
* :func:`read_dense_spike_map` -- "0"/"1" token maps (conv/pool) -> bool ``[T, C, H, W]``.
* :func:`read_weight_list` -- ``idx pre_name post_name weight`` lists -> float32 ``[n_post, n_pre]``.
* :func:`read_conv_weights` -- one line of ``K*C*k*k`` floats -> float32 ``[K, C, k, k]``.
* :func:`read_checkpoint_cnn` -- the authors' whitespace checkpoint -> ``{"layer<i>.weight": ...}``.
* :func:`read_lyon_matrix` -- ASCII Lyon-ear output -> float64 ``[78, n_frames]``.
* :func:`read_authors_config` -- ``KEY = value;`` / ``[ ... ]`` configs -> dict of strings.

The readers live by format in ``authors_spikes``, ``authors_weights`` and ``authors_inputs``; the
shared number and decoding helpers in ``authors_text``; the bounded (gzip-aware) read in ``bounded``.
"""

from __future__ import annotations

from .authors_inputs import read_authors_config, read_lyon_matrix
from .authors_spikes import read_dense_spike_map, read_sparse_spikes
from .authors_weights import (
    CNN_CHECKPOINT_ARCH,
    checkpoint_size,
    read_checkpoint_cnn,
    read_conv_weights,
    read_weight_list,
)

__all__ = [
    "CNN_CHECKPOINT_ARCH",
    "checkpoint_size",
    "read_authors_config",
    "read_checkpoint_cnn",
    "read_conv_weights",
    "read_dense_spike_map",
    "read_lyon_matrix",
    "read_sparse_spikes",
    "read_weight_list",
]
