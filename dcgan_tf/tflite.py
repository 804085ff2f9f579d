"""TFLite: the generator's `serving_default` (z -> uint8 images) as a .tflite file, and a sampler for it.

The converter gets a function of its own, built from the Keras generator, with TFLite's builtin ops only:
the SavedModel's signatures keep their NaN check (CheckNumerics) and, in `sample`, their random ops, which
phones and browsers would need TensorFlow's own kernels for. The sampler runs the file with the LiteRT
interpreter (`pip install -e '.[tflite]'`), or TensorFlow's older tf.lite.Interpreter where LiteRT is not
installed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from dcgan_tf import export, images
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import ConfigError

SIGNATURE = 'serving_default'
INPUT = 'z'
OUTPUT = 'images'
FILE_NAMES = {'tflite': 'generator.tflite', 'tflite_float16': 'generator_float16.tflite'}
BATCH = 256  # z's per interpreter call: bounds memory, and fixed, so a z gives the same pixels every time.


def convert(generator, z_dim: int, float16: bool = False) -> bytes:
    """The TFLite flatbuffer of z [N, z_dim] float32 -> images [N, H, W, C] uint8 (signature
    `serving_default`, the SavedModel's names); `float16` stores the weights in float16."""
    # The converter reads the weights through this module: with the Keras model as the trackable it
    # finds no values and writes a model that outputs NaN (see export.tf_variables).
    weights = tf.Module()
    weights.variables_ = export.tf_variables(generator)
    function = tf.function(
        lambda z: {OUTPUT: export.scale_to_uint8(generator(z, training=False))},
        input_signature=[tf.TensorSpec([None, z_dim], tf.float32, name=INPUT)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], weights)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def default_path(workdir: str, fmt: str) -> str:
    return os.path.join(workdir, FILE_NAMES[fmt])


def save(path: str, generator, z_dim: int, fmt: str = 'tflite') -> str:
    """Converts `generator` (fmt: tflite or tflite_float16) and writes `path` whole or not at all."""
    images.write_file(path, convert(generator, z_dim, float16=fmt == 'tflite_float16'))
    return path


def export_generators(
    generator, ema_generator, z_dim: int, path: str, fmt: str = 'tflite', sampler: str = 'ema'
) -> str:
    """`--mode=export --format=tflite*`: the EMA generator when there is one (the SavedModel's default;
    `sampler='raw'` for the plain one) -> `path`."""
    chosen = ema_generator if ema_generator is not None and sampler == 'ema' else generator
    return save(path, chosen, z_dim, fmt)


# --- running a .tflite file ---


def _interpreter(content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - the optional [tflite] extra.
    except ImportError:
        with warnings.catch_warnings():  # Its deprecation notice points at the extra this falls back from.
            warnings.simplefilter('ignore')
            return tf.lite.Interpreter(model_content=content)
    return Interpreter(model_content=content)


class TFLiteGenerator:
    """A .tflite generator written by `save`: numpy in, numpy out, as export.LoadedGenerator.

    Args:
      path: the .tflite file (local, gs://, ...).

    Raises:
      ConfigError: the file is missing, not a TFLite model, or not a generator from z to images.
    """

    def __init__(self, path: str):
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise ConfigError(f'--model={path} does not exist; write one with --mode=export --format=tflite.')
        content = workdir_lib.read_bytes(path)
        try:
            interpreter = _interpreter(content)
            signatures = interpreter.get_signature_list()
        except (ValueError, RuntimeError) as e:
            reason = workdir_lib.error_line(e)
            raise ConfigError(f'--model={path} is not a TFLite file ({reason}).') from None
        not_ours = ConfigError(
            f'--model={path} is a TFLite file but not a dcgan_tf generator (it has no {SIGNATURE} signature '
            f'from z [N, z_dim] to uint8 images [N, H, W, C]); write one with --mode=export --format=tflite.'
        )
        if signatures.get(SIGNATURE) != {'inputs': [INPUT], 'outputs': [OUTPUT]}:
            raise not_ours
        self._runner = interpreter.get_signature_runner(SIGNATURE)
        z_info = self._runner.get_input_details()[INPUT]
        out_info = self._runner.get_output_details()[OUTPUT]
        z_shape, out_shape = list(z_info['shape_signature']), list(out_info['shape_signature'])
        if (
            z_info['dtype'] != np.float32
            or out_info['dtype'] != np.uint8
            or len(z_shape) != 2
            or len(out_shape) != 4
            or out_shape[1] != out_shape[2]
            or out_shape[3] not in (1, 3)
        ):
            raise not_ours
        self.path = path
        self.z_dim = int(z_shape[1])
        self.fingerprint = hashlib.sha256(content).hexdigest()
        self.metadata: dict[str, Any] = {
            'z_dim': self.z_dim,
            'z_distribution': export.Z_DISTRIBUTION,
            'resolution': int(out_shape[1]),
            'channels': int(out_shape[3]),
            'file_bytes': len(content),
        }

    def check_z(self, z: np.ndarray, what: str = 'z') -> np.ndarray:
        return export.check_z(z, self.z_dim, what)

    def generate(self, z: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """uint8 images [N, H, W, C] for z [N, z_dim]."""
        z = self.check_z(z)
        parts = [self._runner(**{INPUT: z[i : i + batch_size]})[OUTPUT] for i in range(0, len(z), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint8)

    def sample(self, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, z) for the z's the SavedModel's `sample` signature draws for (num, seed)."""
        export.check_sample_args(num, seed)
        z = export.sample_z(num, seed, self.z_dim)
        return self.generate(z), z


def load(path: str) -> TFLiteGenerator:
    """Loads a .tflite generator; ConfigError with one sentence if `path` is not one."""
    return TFLiteGenerator(path)
