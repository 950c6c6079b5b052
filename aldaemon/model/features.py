"""Per-task features computed once and kept in the store, so a re-score skips tokenizing.

A model whose first step learns nothing from the labels (an sklearn Pipeline starting with
a HashingVectorizer, as the default model does) turns the same text into the same
features for every version. The scoring job (model/pool_scoring.py) therefore keeps that
step's output per task in the store's `task_features` table, with

    featurizer    which step made them: its class and parameters, digested; a model
                  with other hashing parameters recomputes every task's features
    text_digest   which text they were made from: a task whose text changed in Label
                  Studio no longer matches and is recomputed on its next score

and feeds the rest of the pipeline from them. Any other model reads the texts.

The features are a sparse row of float32 counts, stored as its nonzero entries in column
order, each a column index (int32) and its value (float32), little-endian, so a chunk's
rows decode in one vectorized pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import Pipeline

_ENTRY = np.dtype([("index", "<i4"), ("value", "<f4")])  # one nonzero of a row


def cached_step(model: object) -> HashingVectorizer | None:
    """The model's first step when its output can be cached per task, else None."""
    if isinstance(model, Pipeline) and len(model.steps) >= 2:
        first = model.steps[0][1]
        if isinstance(first, HashingVectorizer):
            return first
    return None


def featurizer_key(step: HashingVectorizer) -> str:
    """Names what the step computes: two steps with the same key give the same features."""
    params = {name: repr(value) for name, value in sorted(step.get_params().items())}
    digest = hashlib.blake2b(json.dumps(params).encode(), digest_size=8).hexdigest()
    return f"{type(step).__name__}:{digest}"


def text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def encode_rows(matrix: Any) -> list[bytes]:
    """One blob per row of a sparse matrix (see the module docstring for the layout)."""
    csr = scipy.sparse.csr_matrix(matrix)
    csr.sort_indices()
    entries = np.empty(csr.nnz, dtype=_ENTRY)
    entries["index"] = csr.indices
    entries["value"] = csr.data
    buffer = entries.tobytes()
    offsets = csr.indptr * _ENTRY.itemsize
    return [buffer[offsets[row] : offsets[row + 1]] for row in range(csr.shape[0])]


def decode_rows(blobs: Sequence[bytes], *, n_features: int) -> scipy.sparse.csr_matrix:
    """The sparse matrix whose rows `encode_rows` wrote, in the order given."""
    lengths = np.fromiter((len(blob) for blob in blobs), dtype=np.int64, count=len(blobs))
    indptr = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum(lengths // _ENTRY.itemsize, out=indptr[1:])
    entries = np.frombuffer(b"".join(blobs), dtype=_ENTRY)
    return scipy.sparse.csr_matrix(
        (entries["value"], entries["index"], indptr), shape=(len(blobs), n_features)
    )
