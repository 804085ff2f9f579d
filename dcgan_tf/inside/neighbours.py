"""The memorisation check: generated samples beside their nearest training images.

Distances are Euclidean, between pixels (images in [-1, 1]) or between the project's classifier features.
The yardstick is the training set itself: each of some training images' distance to its nearest *other*
training image. Samples much closer to the training set than its own images are to each other would be
copies; samples about as close are new images of the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dcgan_tf import images as images_lib

CHUNK = 4096  # Bank rows per distance block: [queries, CHUNK] floats at a time.


def nearest(
    queries: np.ndarray, bank: np.ndarray, k: int, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n, k], distances [n, k]) of each query's k nearest bank rows, closest first.

    Args:
      queries: float [n, d].
      bank: float [m, d].
      k: neighbours per query.
      exclude_self: queries are bank[:n]; each query's own row is skipped (leave-one-out).
    """
    queries = queries.astype(np.float32)
    query_norms = (queries**2).sum(axis=1)[:, None]
    best_d = np.full((len(queries), 0), np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(bank), CHUNK):
        block = bank[start : start + CHUNK].astype(np.float32)
        d2 = query_norms + (block**2).sum(axis=1)[None] - 2.0 * queries @ block.T
        if exclude_self:
            rows = np.arange(len(queries))
            inside = (rows >= start) & (rows < start + len(block))
            d2[rows[inside], rows[inside] - start] = np.inf
        candidates_d = np.concatenate([best_d, d2], axis=1)
        candidates_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, start + len(block)), d2.shape)], axis=1
        )
        order = np.argsort(candidates_d, axis=1, kind='stable')[:, :k]
        best_d = np.take_along_axis(candidates_d, order, axis=1)
        best_i = np.take_along_axis(candidates_i, order, axis=1)
    return best_i, np.sqrt(np.maximum(best_d, 0.0))


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, H*W*C] in [-1, 1]."""
    return images_lib.to_unit_range(images.reshape(len(images), -1))


def classifier_vectors(path: str, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The project classifier's penultimate features [N, 256] of uint8 images (any size: resized to 28x28)."""
    from dcgan_tf.quality import classifier  # noqa: PLC0415 - Keras and the model only when asked for.

    model = classifier.load_feature_model(path)
    parts = []
    for i in range(0, len(images), batch):
        x = classifier.to_classifier_input(images_lib.to_unit_range(images[i : i + batch]))
        parts.append(np.asarray(model(x, training=False)[0]))
    return np.concatenate(parts)


def memorisation(
    sample_vectors: np.ndarray, train_vectors: np.ndarray, num_reference: int, k: int
) -> dict[str, Any]:
    """Neighbours of the samples in the training set, and the training set's own leave-one-out yardstick.

    Returns:
      {'indices', 'distances': [n, k] for the samples; 'sample_median': their median nearest distance;
       'train_median': the median over `num_reference` training images of the distance to their nearest
       other training image; 'ratio': sample_median / train_median; 'closer_than_train_min': the share of
       samples nearer to a training image than the closest training pair among the reference images}.
    """
    indices, distances = nearest(sample_vectors, train_vectors, k)
    reference = min(num_reference, len(train_vectors) - 1)
    _, own = nearest(train_vectors[:reference], train_vectors, 1, exclude_self=True)
    sample_median, train_median = float(np.median(distances[:, 0])), float(np.median(own[:, 0]))
    return {
        'indices': indices,
        'distances': distances,
        'sample_median': sample_median,
        'train_median': train_median,
        'ratio': sample_median / max(train_median, 1e-12),
        'closer_than_train_min': float(np.mean(distances[:, 0] < own[:, 0].min())),
    }
