"""The domain classifier: training, orbax round trip, identity, cache directory."""

import json
import os

import numpy as np
import pytest

from pga_jax import data
from pga_jax.evaluation import classifier as classifier_lib
from pga_jax.evaluation import evaluate

SPEC = classifier_lib.ClassifierSpec(conv_features=(8,), dense_features=16, epochs=3, batch_size=32)


def toy_split(n, seed):
  """Two classes a linear model separates: bright top half vs bright bottom half."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 2, n)
  images = rs.randint(0, 60, size=(n, 28, 28, 1)).astype(np.uint8)
  for i, label in enumerate(labels):
    rows = slice(0, 14) if label else slice(14, 28)
    images[i, rows] += 150
  return data.Split(images, labels.astype(np.int64))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  train_split, test_split = toy_split(256, 0), toy_split(64, 1)
  fp = classifier_lib.fingerprint(
    train_split.images, train_split.labels, test_split.images, test_split.labels
  )
  directory = classifier_lib.default_directory(
    str(tmp_path_factory.mktemp('cache')), 'toy', SPEC, fp
  )
  clf = classifier_lib.load_or_train(directory, 'toy', SPEC, train_split, test_split, fp)
  return clf, train_split, test_split, fp


def test_trains_saves_and_reloads_the_same_network(trained):
  clf, _, test_split, _ = trained
  assert clf.test_accuracy > 0.95  # the toy task is easy
  with open(os.path.join(clf.directory, classifier_lib.INFO_FILE)) as f:
    info = json.load(f)
  assert info['test_accuracy'] == clf.test_accuracy and info['dataset'] == 'toy'
  assert os.path.isdir(os.path.join(clf.directory, classifier_lib.PARAMS_DIR))
  again = classifier_lib.load(clf.directory)
  assert again.identity == clf.identity
  np.testing.assert_array_equal(again.features(test_split.images), clf.features(test_split.images))
  feats = clf.features(test_split.images)
  assert feats.shape == (64, 16) and feats.dtype == np.float32
  # uint8 images and the same images in [-1, 1] give the same features.
  np.testing.assert_allclose(clf.features(data.pipeline.scale_images(test_split.images)), feats)
  # No temporary directories are left next to it.
  assert os.listdir(os.path.dirname(clf.directory)) == [os.path.basename(clf.directory)]


def test_existing_classifier_is_loaded_not_retrained(trained, monkeypatch):
  clf, train_split, test_split, fp = trained
  monkeypatch.setattr(classifier_lib, 'train', lambda *a, **k: pytest.fail('retrained'))
  again = classifier_lib.load_or_train(clf.directory, 'toy', SPEC, train_split, test_split, fp)
  assert again.identity == clf.identity


def test_identity_depends_on_parameters_and_directory_on_spec_and_data(trained):
  clf, _, _, fp = trained
  params = dict(clf.params)
  changed = {k: dict(v) for k, v in params.items()}
  changed['Dense_0']['bias'] = changed['Dense_0']['bias'] + 1e-3
  spec = classifier_lib.ClassifierSpec.from_dict(clf.info['spec'])
  assert classifier_lib.params_identity(spec, 2, changed) != clf.identity
  assert classifier_lib.params_identity(spec, 2, params) == clf.identity
  d = classifier_lib.default_directory('/c', 'toy', SPEC, fp)
  assert classifier_lib.default_directory('/c', 'toy', SPEC, fp) == d
  assert classifier_lib.default_directory('/c', 'toy', SPEC, 'other') != d
  other_spec = classifier_lib.ClassifierSpec(
    conv_features=(8,), dense_features=16, epochs=4, batch_size=32
  )
  assert classifier_lib.default_directory('/c', 'toy', other_spec, fp) != d


def test_modified_parameters_are_detected_on_load(trained, tmp_path):
  clf, _, _, _ = trained
  info = dict(clf.info, identity='0' * 64)
  clf2 = classifier_lib.TrainedClassifier(clf.module, clf.params, info)
  classifier_lib.save(clf2, str(tmp_path / 'c'))
  with pytest.raises(classifier_lib.ClassifierError, match='do not match'):
    classifier_lib.load(str(tmp_path / 'c'))


def test_dataset_without_labels_is_a_clear_error(tmp_path):
  split = toy_split(40, 0)
  unlabelled = data.Split(split.images, None)
  with pytest.raises(evaluate.EvaluationError, match='no labels.*--features=inception'):
    evaluate.domain_network('folder', unlabelled, unlabelled, cache_dir=str(tmp_path))
