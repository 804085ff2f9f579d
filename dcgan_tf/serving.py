"""TF Serving's REST predict API, answered from an export loaded the way TF Serving loads it.

`SessionModel` loads a SavedModel into a TF1-style session with the `serve` tag set, which is what
TensorFlow Serving's C++ loader and `saved_model_cli run` do (so an export that runs here runs there);
`predict` turns a request body of `POST /v1/models/<name>:predict` into a call of one signature and
answers in TF Serving's response shape. Use it to check a request before deploying, or in tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from dcgan_tf.config import ConfigError

DEFAULT_SIGNATURE = 'serving_default'


class SessionModel:
    """A SavedModel in a session, as TF Serving holds it: signature name -> feeds -> fetched arrays.

    Args:
      path: the SavedModel folder (e.g. `<workdir>/serving/1`).
    """

    def __init__(self, path: str):
        if not tf.io.gfile.exists(f'{path.rstrip("/")}/saved_model.pb'):
            raise ConfigError(f'{path} is not a SavedModel folder (no saved_model.pb in it).')
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        # Silences the TF1 loader's deprecation notice: that loader is the point (TF Serving mirrors it).
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel('ERROR')
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ['serve'], path)
        finally:
            logger.setLevel(level)
        self.signatures = {
            name: signature
            for name, signature in meta_graph.signature_def.items()
            if not name.startswith('__')
        }

    def inputs(self, name: str) -> dict[str, tuple[tf.DType, list[int]]]:
        """{input name: (dtype, shape with -1 for any size)} of signature `name`."""
        return {
            key: (tf.dtypes.as_dtype(info.dtype), [d.size for d in info.tensor_shape.dim])
            for key, info in self.signatures[name].inputs.items()
        }

    def run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        signature = self.signatures[name]
        feed_dict = {signature.inputs[key].name: value for key, value in feeds.items()}
        keys = sorted(signature.outputs)
        values = self.session.run([signature.outputs[k].name for k in keys], feed_dict=feed_dict)
        return {key: np.asarray(value) for key, value in zip(keys, values, strict=True)}

    def close(self) -> None:
        self.session.close()


def _error(message: str) -> dict[str, str]:
    return {'error': message}


def _tensor(value: Any, key: str, dtype: tf.DType, shape: list[int]) -> np.ndarray:
    """A JSON value as the input's numpy array; ValueError with a sentence when it cannot be."""
    try:
        array = np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError):
        raise ValueError(f'input {key} must be {dtype.name} values') from None
    if array.ndim != len(shape) or any(w not in (-1, g) for w, g in zip(shape, array.shape, strict=True)):
        wanted = '[' + ', '.join('N' if d == -1 else str(d) for d in shape) + ']'
        raise ValueError(f'input {key} has shape {list(array.shape)}, but the signature takes {wanted}')
    return array


def _inputs(request: Mapping[str, Any], specs: dict[str, tuple[tf.DType, list[int]]]) -> dict[str, Any]:
    """{input name: JSON value} from the row (`instances`) or columnar (`inputs`) form."""
    if 'instances' in request:
        rows = request['instances']
        if not isinstance(rows, list) or not rows:
            raise ValueError('"instances" must be a non-empty list')
        if len(specs) == 1 and not all(isinstance(r, dict) for r in rows):
            return {next(iter(specs)): rows}
        if not all(isinstance(r, dict) and set(r) == set(specs) for r in rows):
            raise ValueError(f'each instance must be an object with the inputs {", ".join(sorted(specs))}')
        return {key: [r[key] for r in rows] for key in specs}
    columns = request['inputs']
    if len(specs) == 1 and not (isinstance(columns, dict) and set(columns) == set(specs)):
        return {next(iter(specs)): columns}
    if not isinstance(columns, dict) or set(columns) != set(specs):
        raise ValueError(f'"inputs" must be an object with the inputs {", ".join(sorted(specs)) or "(none)"}')
    return dict(columns)


def _graph_error(error: tf.errors.OpError) -> str:
    """'num must be at least 1' from the graph's 'assertion failed: [num must be at least 1.  ] [...]'."""
    found = re.search(r'assertion failed: \[([^\]]*)\]', error.message or '')
    if found:
        return found.group(1).strip().rstrip('.')
    lines = [line for line in (error.message or '').splitlines() if line.strip() and not line.endswith(':')]
    return (lines or [type(error).__name__])[0].strip()[:200]


def _json(array: np.ndarray) -> Any:
    if array.dtype.kind in 'SO':  # Strings (the metadata's json) are text in TF Serving's answers.
        return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(
            array
        ).tolist()
    return array.tolist()


def predict(model: SessionModel, request: Mapping[str, Any]) -> dict[str, Any]:
    """Answers one REST predict request as TF Serving does.

    Args:
      model: the SavedModel in a session.
      request: the JSON body: `{"signature_name": ..., "instances": [...]}` (row form: one entry per
        example, all inputs batched) or `{"signature_name": ..., "inputs": ...}` (columnar form: whole
        tensors, e.g. the scalars of `sample`); signature_name defaults to serving_default.

    Returns:
      `{"predictions": [...]}` for the row form (one entry per example; an object per example when the
      signature has several outputs), `{"outputs": ...}` for the columnar form (the tensor, or an object of
      tensors), or `{"error": "..."}` for a request TF Serving would refuse.
    """
    if not isinstance(request, Mapping) or ('instances' in request) == ('inputs' in request):
        return _error('the request must be a JSON object with exactly one of "instances" or "inputs"')
    name = request.get('signature_name', DEFAULT_SIGNATURE)
    if name not in model.signatures:
        return _error(
            f'signature {name!r} is not in this model (it has {", ".join(sorted(model.signatures))})'
        )
    specs = model.inputs(name)
    try:
        values = _inputs(request, specs)
        feeds = {key: _tensor(values[key], key, *specs[key]) for key in specs}
    except ValueError as e:
        return _error(str(e))
    try:
        outputs = model.run(name, feeds)
    except tf.errors.OpError as e:  # A bound checked by the graph (num, steps, NaN pixels).
        return _error(_graph_error(e))
    if 'inputs' in request:
        if len(outputs) == 1:
            return {'outputs': _json(next(iter(outputs.values())))}
        return {'outputs': {key: _json(value) for key, value in outputs.items()}}
    sizes = {len(value) if value.ndim else None for value in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        return _error(
            'the outputs do not share a batch size; send this request in the columnar "inputs" form'
        )
    if len(outputs) == 1:
        return {'predictions': _json(next(iter(outputs.values())))}
    rows = sizes.pop()
    return {'predictions': [{key: _json(value[i]) for key, value in outputs.items()} for i in range(rows)]}
