"""LMDB databases of encoded images (--dataset=lsun_lmdb: the official LSUN downloads); keys are LMDB keys."""

from __future__ import annotations

import dataclasses
import threading
from typing import ClassVar

import numpy as np
import tensorflow as tf

from dcgan_tf.config import Config
from dcgan_tf.data.base import AUTOTUNE, DataError, KeyedSource, check_some_decode, hold_out, sample_evenly

LMDB_FETCH_BATCH = 64  # Keys looked up per Python call: amortises numpy_function's overhead.
_LMDB_ENVS: dict[str, object] = {}
_LMDB_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class LmdbSource(KeyedSource):
    """Encoded images under the keys (bytes, an object array) of the database at `lmdb_path`."""

    keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, object))
    lmdb_path: str = ''

    kind: ClassVar[str] = 'lmdb'

    def key_list(self) -> np.ndarray:
        return self.keys

    def describe(self) -> str:
        return 'decoded from LMDB'

    def _fetch_batches(self, keys: tf.data.Dataset, fetch) -> tf.data.Dataset:
        return keys.batch(LMDB_FETCH_BATCH).map(fetch, num_parallel_calls=AUTOTUNE).unbatch()

    def fetch(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        path = self.lmdb_path.encode()
        fetch = lambda k: tf.numpy_function(_lmdb_fetch, [path, k], tf.string, stateful=False)  # noqa: E731
        return self._fetch_batches(keys, fetch)

    def fetch_marked(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        path = self.lmdb_path.encode()

        def fetch(batch: tf.Tensor, ends: tf.Tensor, *labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return tf.numpy_function(_lmdb_fetch, [path, batch], tf.string, stateful=False), ends, *labels

        return self._fetch_batches(keys, fetch)


def _open_lmdb(path: str):
    import lmdb  # Only the lsun_lmdb source needs it.

    with _LMDB_LOCK:
        if path not in _LMDB_ENVS:
            try:
                _LMDB_ENVS[path] = lmdb.open(
                    path, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512
                )
            except lmdb.Error as e:
                raise DataError(f'Cannot open LMDB database {path}: {e}.') from e
        return _LMDB_ENVS[path]


def _lmdb_fetch(path: bytes, keys: np.ndarray) -> np.ndarray:
    """Values of `keys` (b'' for a missing one, which then fails to decode and is skipped)."""
    with _open_lmdb(path.decode()).begin() as txn:
        # b'' (a pass end) is no LMDB key: LMDB refuses empty keys.
        return np.array([(txn.get(bytes(k)) if len(k) else None) or b'' for k in keys], dtype=object)


def lmdb_source(cfg: Config, split: str) -> LmdbSource:
    env = _open_lmdb(cfg.data_dir)
    with env.begin() as txn:
        keys = np.array(list(txn.cursor().iternext(keys=True, values=False)), dtype=object)
    if not len(keys):
        raise DataError(f'The LMDB database {cfg.data_dir} is empty.')
    keys = hold_out(keys, split, cfg.eval_holdout, cfg.data_dir)
    fetch_one = lambda k: _lmdb_fetch(cfg.data_dir.encode(), np.array([k], dtype=object))[0]  # noqa: E731
    check_some_decode(cfg, sample_evenly(keys), fetch_one, cfg.data_dir)
    return LmdbSource(name=f'lsun_lmdb:{cfg.data_dir}', keys=keys, lmdb_path=cfg.data_dir)
