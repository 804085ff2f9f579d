"""The tiny models every test trains, in one place: as a Config, and as command-line flags.

Imported by conftest.py and by tests/multiworker_task.py, which runs as its own process and must
not get conftest's logical devices, so this module touches no TensorFlow.
"""

from typing import Any

# Small enough for a 2-core CPU: 16x16, widths 8, batch 8, synthetic data; one CPU device.
TINY_VALUES: dict[str, Any] = dict(
    dataset='synthetic',
    resolution=16,
    channels=1,
    gf_dim=8,
    df_dim=8,
    z_dim=16,
    batch_size=8,
    train_steps=4,
    log_every=2,
    sample_every=2,
    checkpoint_every=2,
    num_grid=4,
    synthetic_examples=64,
    strategy='one_device',
    devices='/cpu:0',
    # The end-of-training export costs seconds per run; tests/test_export.py turns it on.
    export_at_end=False,
)
# The smallest model, for subprocess tests (kill, NaN, signals, multi-worker) where start-up dominates.
SMALLEST_VALUES: dict[str, Any] = dict(
    dataset='synthetic', resolution=16, gf_dim=4, df_dim=4, z_dim=8, batch_size=4
)
MODEL_NAMES = ('resolution', 'gf_dim', 'df_dim', 'z_dim', 'batch_size')


def as_flags(values: dict[str, Any]) -> list[str]:
    """--name=value for each entry (booleans as absl spells them)."""
    return [f'--{k}={str(v).lower() if isinstance(v, bool) else v}' for k, v in values.items()]


def tiny_values(**overrides: Any) -> dict[str, Any]:
    return {**TINY_VALUES, **overrides}


def tiny_config(**overrides: Any):
    """TINY_VALUES with `overrides` as a Config."""
    from dcgan_tf.config import Config  # noqa: PLC0415 - importing this module must stay cheap.

    return Config(**tiny_values(**overrides))


# The smallest model on the command line; and the tiny model's shape and batch (test_main, test_bench).
TINY_CLI = as_flags(SMALLEST_VALUES)
TINY_MODEL_CLI = as_flags({k: TINY_VALUES[k] for k in MODEL_NAMES})
