"""Sample-quality metrics in numpy: FID, KID, an Inception-style score, class coverage, the confident share.

The maths streams: features arrive batch by batch into running sums (mean and covariance in float64, the
class-probability statistics) plus a bounded random reservoir for the kernel distance, so 50k samples need
memory for one batch and the reservoir, not for 50k feature vectors. No TensorFlow here.
"""

from __future__ import annotations

import numpy as np

KID_RESERVOIR = 10000  # Feature vectors kept per set for KID: 80 MB at 2048-d float32.
# Lower is better for these; the others (score, coverage) are better higher.
LOWER_IS_BETTER = ('fid', 'kid')
# A sample counts as confidently classified above this top probability (`confident`).
CONFIDENT_PROBABILITY = 0.9


# --- the maths ---


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition.

    Rounding makes a covariance's smallest eigenvalues slightly negative; they are clipped to 0, so
    the result stays real and finite where a general `sqrtm` returns complex values or NaN.
    """
    matrix = np.asarray(matrix, np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) for covariances, without the non-symmetric product's sqrtm.

    sigma1 @ sigma2 is similar to s @ sigma2 @ s with s = sqrt(sigma1), which is symmetric PSD: the
    same eigenvalues, so the trace of the root is the sum of their (clipped) square roots.
    """
    root1 = sqrtm_psd(sigma1)
    inner = root1 @ np.asarray(sigma2, np.float64) @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(s1 + s2 - 2 sqrt(s1 s2)) (Heusel et al.)."""
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # Rounding can give -1e-12 for identical sets.


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # KID's kernel (Binkowski et al. 2018): (x.y / d + 1)^3, no parameter to tune.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (diagonals left out of the within-set means)."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_distance(
    x: np.ndarray, y: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: the mean and standard deviation of the unbiased MMD^2 over random subsets of both sets."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f'KID needs at least 2 samples per set, got {len(x)} and {len(y)}.')
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) = exp(H(p(y)) - E_x H(p(y|x))): from 1 to the number of classes."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.score()


def class_coverage(probabilities: np.ndarray) -> float:
    """Entropy of the histogram of predicted classes over log(classes): 1 all equally, 0 one class."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.coverage()


def confident_share(probabilities: np.ndarray) -> float:
    """Share of samples whose top class probability exceeds CONFIDENT_PROBABILITY: 1 when all are clear."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.confident()


def histogram_entropy_bits(probabilities: np.ndarray) -> float:
    """Entropy of the predicted-class histogram in bits: log2(classes) when every class is as frequent."""
    moments = ProbabilityMoments()
    moments.update(probabilities)
    return moments.entropy_bits()


# --- streaming accumulators ---


class GaussianMoments:
    """Running count, sum and sum of outer products (float64): the mean and covariance of a stream."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.outer = None

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if self.total is None:
            self.total = np.zeros(features.shape[1])
            self.outer = np.zeros((features.shape[1], features.shape[1]))
        self.count += len(features)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the unbiased (n - 1) sample covariance."""
        if self.count < 2:
            raise ValueError(f'A covariance needs at least 2 samples, got {self.count}.')
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, covariance


class ProbabilityMoments:
    """Running sums for the score (mean p(y|x), mean entropy), the argmax histogram (coverage, entropy_bits)
    and the count of confident samples."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.entropy_total = 0.0
        self.histogram = None
        self.confident_count = 0
        self.labelled_count = 0  # Samples drawn for a requested class (a conditional generator's) ...
        self.agreeing_count = 0  # ... and those the classifier puts in that class.

    def update(self, probabilities: np.ndarray, labels: np.ndarray | None = None) -> None:
        p = np.asarray(probabilities, np.float64)
        if labels is not None:
            self.labelled_count += len(p)
            self.agreeing_count += int((p.argmax(axis=1) == np.asarray(labels)).sum())
        if self.total is None:
            self.total = np.zeros(p.shape[1])
            self.histogram = np.zeros(p.shape[1])
        self.count += len(p)
        self.total += p.sum(axis=0)
        self.entropy_total += float(_entropy(p).sum())
        self.histogram += np.bincount(p.argmax(axis=1), minlength=p.shape[1])
        self.confident_count += int((p.max(axis=1) > CONFIDENT_PROBABILITY).sum())

    def score(self) -> float:
        marginal = self.total / self.count
        return float(np.exp(_entropy(marginal) - self.entropy_total / self.count))

    def coverage(self) -> float:
        # + 0.0 turns the -0.0 of a one-class histogram into 0.0.
        return float(_entropy(self.histogram / self.count) / np.log(len(self.histogram))) + 0.0

    def entropy_bits(self) -> float:
        return float(_entropy(self.histogram / self.count) / np.log(2.0)) + 0.0

    def confident(self) -> float:
        return self.confident_count / self.count

    def label_agreement(self) -> float:
        return self.agreeing_count / self.labelled_count


class Reservoir:
    """A uniform random sample of at most `capacity` rows of a stream (Vitter's algorithm R)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.rows: np.ndarray | None = None
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float32)
        if self.rows is None:
            self.rows = np.zeros((self.capacity, rows.shape[1]), np.float32)
        for row in rows:
            if self.seen < self.capacity:
                self.rows[self.seen] = row
            else:
                slot = self.rng.integers(self.seen + 1)
                if slot < self.capacity:
                    self.rows[slot] = row
            self.seen += 1

    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]


class FeatureStats:
    """Everything the metrics need from one set of images, accumulated batch by batch."""

    def __init__(self, seed: int = 0, reservoir: int = KID_RESERVOIR):
        self.gaussian = GaussianMoments()
        self.probabilities = ProbabilityMoments()
        self.reservoir = Reservoir(reservoir, seed)

    @property
    def count(self) -> int:
        return self.gaussian.count

    def update(
        self, features: np.ndarray, probabilities: np.ndarray | None, labels: np.ndarray | None = None
    ) -> None:
        self.gaussian.update(features)
        self.reservoir.update(features)
        if probabilities is not None:
            self.probabilities.update(probabilities, labels)


def compare(
    generated: FeatureStats,
    real: FeatureStats,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """fid, kid, kid_std; when the net classifies also score, coverage, confident, entropy_bits and
    the same four of the real set (`*_real`); for samples of requested classes, label_agreement: the
    share the net puts in the class asked for."""
    mu_g, sigma_g = generated.gaussian.mean_and_covariance()
    mu_r, sigma_r = real.gaussian.mean_and_covariance()
    kid, kid_std = kernel_distance(
        generated.reservoir.sample(), real.reservoir.sample(), kid_subsets, kid_subset_size, seed
    )
    metrics = {'fid': frechet_distance(mu_g, sigma_g, mu_r, sigma_r), 'kid': kid, 'kid_std': kid_std}
    for stats, suffix in ((generated, ''), (real, '_real')):
        moments = stats.probabilities
        if moments.count:
            metrics[f'score{suffix}'] = moments.score()
            metrics[f'coverage{suffix}'] = moments.coverage()
            metrics[f'confident{suffix}'] = moments.confident()
            metrics[f'entropy_bits{suffix}'] = moments.entropy_bits()
        if moments.labelled_count:
            metrics[f'label_agreement{suffix}'] = moments.label_agreement()
    return metrics


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing yet)."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best
