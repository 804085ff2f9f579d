"""TF Serving: --serving_version writes <base>/<N>/ (never over an existing version), and requests in the
exact JSON of TF Serving's REST predict API, row and columnar, are answered by the export loaded as TF
Serving loads it (a session with the `serve` tags) in TF Serving's response shape."""

import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from dcgan_tf import config, export, serving, train
from dcgan_tf.config import ConfigError


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """A trained run exported as version 1 of a TF Serving model: (workdir, session model, loaded export)."""
    workdir = str(tmp_path_factory.mktemp('run'))
    train.train_and_evaluate(tiny_config(train_steps=2), workdir)
    path = export.run(config.validate(tiny_config(mode='export', workdir=workdir, serving_version=1)))
    assert path == os.path.join(workdir, 'serving', '1')
    model = serving.SessionModel(path)
    yield workdir, model, export.load(path)
    model.close()


def _request(body):
    """What the server parses: the request as JSON text and back (no numpy types can slip through)."""
    return json.loads(json.dumps(body))


def _z(num, seed=0):
    return np.random.default_rng(seed).standard_normal((num, 16)).astype(np.float32)


def test_version_folder_layout_and_refusal(served, tmp_path):
    workdir, _, _ = served
    assert os.path.exists(os.path.join(workdir, 'serving', '1', 'saved_model.pb'))
    again = config.validate(tiny_config(mode='export', workdir=workdir, serving_version=1))
    with pytest.raises(ConfigError, match=r'serving/1 exists already.*--serving_version=2'):
        export.run(again)
    # Another base folder (--saved_model) takes the versions instead.
    base = str(tmp_path / 'models' / 'dcgan')
    path = export.run(config.validate(again.replace(saved_model=base, serving_version=7)))
    assert path == os.path.join(base, '7') and export.load(path).metadata['step'] == 2


def test_row_format_serving_default(served):
    _, model, loaded = served
    z = _z(3)
    response = serving.predict(
        model, _request({'signature_name': 'serving_default', 'instances': z.tolist()})
    )
    assert set(response) == {'predictions'}
    # One entry per instance: TF Serving omits the name of a signature's only output.
    images = np.array(response['predictions'])
    assert images.shape == (3, 16, 16, 1)
    # json.dumps of float32 z rounds to float64 text: the same float32 values come back.
    np.testing.assert_array_equal(images, loaded.generate(z))
    # signature_name defaults to serving_default, and each instance may name its input.
    named = serving.predict(model, _request({'instances': [{'z': row} for row in z.tolist()]}))
    assert named == response
    assert json.loads(json.dumps(response)) == response  # A plain JSON answer.


def test_columnar_format_for_the_signatures_with_scalars(served):
    _, model, loaded = served
    response = serving.predict(
        model, _request({'signature_name': 'sample', 'inputs': {'num': 4, 'seed': 11}})
    )
    outputs = response['outputs']  # Several outputs: an object of tensors.
    images, z = loaded.sample(4, 11)
    np.testing.assert_array_equal(np.array(outputs['z'], np.float32), z)
    assert np.abs(np.array(outputs['images']) - images).max() <= 1
    z0, z1 = _z(2, seed=4).tolist()
    body = {'signature_name': 'interpolate', 'inputs': {'z0': z0, 'z1': z1, 'steps': 5, 'spherical': True}}
    walk = serving.predict(model, _request(body))['outputs']
    assert np.array(walk['images']).shape == (5, 16, 16, 1) and np.array(walk['z']).shape == (5, 16)
    np.testing.assert_allclose(np.array(walk['z'])[[0, -1]], [z0, z1], rtol=1e-6)
    facts = serving.predict(model, _request({'signature_name': 'metadata', 'inputs': {}}))['outputs']
    assert facts['z_dim'] == 16 and facts['step'] == 2 and json.loads(facts['json']) == loaded.metadata
    single = serving.predict(model, _request({'inputs': _z(2).tolist()}))  # One input: its value alone.
    assert np.array(single['outputs']).shape == (2, 16, 16, 1)


def test_bad_requests_get_tf_servings_error_object(served):
    _, model, _ = served
    cases = {
        'exactly one of': {'signature_name': 'sample'},
        "'nope' is not in this model": {'signature_name': 'nope', 'instances': [[0.0] * 16]},
        'takes [N, 16]': {'instances': [[0.0] * 15]},
        'num must be at least 1': {'signature_name': 'sample', 'inputs': {'num': 0, 'seed': 1}},
        'must be int32 values': {'signature_name': 'sample', 'inputs': {'num': 'four', 'seed': 1}},
        'inputs num, seed': {'signature_name': 'sample', 'inputs': {'num': 4}},
        # Row form batches every input: the scalars of `sample` need the columnar form, as in TF Serving.
        'takes []': {'signature_name': 'sample', 'instances': [{'num': 4, 'seed': 1}]},
    }
    for expected, body in cases.items():
        response = serving.predict(model, _request(body))
        assert set(response) == {'error'} and expected in response['error'], (body, response)


def test_a_folder_that_is_no_saved_model(tmp_path):
    with pytest.raises(ConfigError, match='not a SavedModel folder'):
        serving.SessionModel(str(tmp_path))
