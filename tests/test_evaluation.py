"""Sample-quality metrics: FID, precision/recall (k=3), KID; caching; `pga evaluate`.

The metric tests use independent computations: exact answers on toy point
sets, a brute-force precision/recall, and the closed-form population MMD^2 of
Gaussians under the cubic kernel. The Fashion-MNIST tests use a small domain
classifier trained once per module.
"""

import json
import os

import numpy as np
import pytest

from pga_jax import data, train
from pga_jax.data import fashion_mnist_offline, pipeline
from pga_jax.evaluation import classifier as classifier_lib
from pga_jax.evaluation import evaluate, metrics, reference_stats
from tests import cli_inprocess, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ precision / recall


def brute_force_precision_recall(real, fake, k=3):
  """The definition, with loops: k-th neighbour radii, then ball membership."""

  def radii(points):
    out = []
    for p in points:
      d = sorted(float(np.linalg.norm(p - q)) for q in points)
      out.append(d[k])  # d[0] is the point itself
    return out

  def covered(centres, rad, points):
    return np.mean([any(np.linalg.norm(p - c) <= r for c, r in zip(centres, rad)) for p in points])

  return covered(real, radii(real), fake), covered(fake, radii(fake), real)


def test_precision_on_a_toy_set_with_a_known_answer():
  real = np.array([[i, 0.0] for i in range(10)])
  # k=3 radii: 3 at the ends (points 0 and 9), 2 everywhere else.
  np.testing.assert_allclose(metrics.knn_radii(real), [3] + [2] * 8 + [3])
  fake = np.array(
    [
      [-2.5, 0],  # 2.5 from point 0 (radius 3): inside
      [-3.5, 0],  # 3.5 from point 0: outside
      [4.5, 1.5],  # sqrt(2.5) = 1.58 from point 4 (radius 2): inside
      [4.5, 2.5],  # sqrt(6.5) = 2.55 from points 4, 5: outside
      [11.9, 0],  # 2.9 from point 9 (radius 3): inside
      [12.1, 0],
    ]
  )  # 3.1 from point 9: outside
  precision, recall = metrics.precision_recall(real, fake)
  assert precision == 0.5
  # Swapping the sets swaps precision and recall.
  assert metrics.precision_recall(fake, real) == (recall, precision)


def test_precision_recall_match_the_brute_force_definition():
  rs = np.random.RandomState(0)
  for trial in range(3):
    real = rs.normal(size=(40, 5))
    fake = rs.normal(loc=0.4 * trial, scale=1.0 + 0.3 * trial, size=(35, 5))
    expected = brute_force_precision_recall(real, fake)
    np.testing.assert_allclose(metrics.precision_recall(real, fake), expected)


def test_precision_recall_are_one_for_identical_sets_and_zero_for_far_ones():
  x = np.random.RandomState(1).normal(size=(200, 8))
  assert metrics.precision_recall(x, x) == (1.0, 1.0)
  assert metrics.precision_recall(x, x + 100.0) == (0.0, 0.0)


# ------------------------------------------------------------------------- KID


def gaussian_moments(mu, cov):
  """First three moment tensors E[x], E[x x], E[x x x] of N(mu, cov)."""
  m2 = cov + np.outer(mu, mu)
  m3 = (
    np.einsum('i,j,k->ijk', mu, mu, mu)
    + np.einsum('i,jk->ijk', mu, cov)
    + np.einsum('j,ik->ijk', mu, cov)
    + np.einsum('k,ij->ijk', mu, cov)
  )
  return mu, m2, m3


def population_mmd2(p, q, d):
  """MMD^2 of two Gaussians under k(x, y) = (x.y/d + 1)^3, in closed form.

  For independent x ~ P, y ~ Q: E (x.y)^n = <M_n(P), M_n(Q)> (moment tensors),
  so E k(x, y) = <M3,M3'>/d^3 + 3<M2,M2'>/d^2 + 3<m1,m1'>/d + 1.
  """

  def expected_kernel(a, b):
    return (
      np.sum(a[2] * b[2]) / d**3 + 3 * np.sum(a[1] * b[1]) / d**2 + 3 * np.dot(a[0], b[0]) / d + 1
    )

  mp, mq = gaussian_moments(*p), gaussian_moments(*q)
  return expected_kernel(mp, mp) + expected_kernel(mq, mq) - 2 * expected_kernel(mp, mq)


def biased_mmd2(x, y):
  """The V-statistic (diagonals included): biased upwards, for contrast."""
  return (
    metrics.polynomial_kernel(x, x).mean()
    + metrics.polynomial_kernel(y, y).mean()
    - 2 * metrics.polynomial_kernel(x, y).mean()
  )


@pytest.mark.parametrize('same', [False, True])
def test_kid_estimator_is_unbiased(same):
  d, m, n, draws = 3, 6, 9, 4000
  p = (np.zeros(d), np.eye(d))
  q = p if same else (np.array([0.6, 0.0, -0.4]), np.diag([1.5, 1.0, 0.6]))
  truth = population_mmd2(p, q, d)
  rs = np.random.RandomState(0)
  unbiased, biased = [], []
  for _ in range(draws):
    x = rs.multivariate_normal(*p, size=m)
    y = rs.multivariate_normal(*q, size=n)
    unbiased.append(metrics.mmd2_unbiased(x, y))
    biased.append(biased_mmd2(x, y))
  unbiased, biased = np.array(unbiased), np.array(biased)
  se = unbiased.std() / np.sqrt(draws)
  assert abs(unbiased.mean() - truth) < 4 * se, (unbiased.mean(), truth, se)
  # The test has the power to see a bias: the V-statistic fails it.
  assert abs(biased.mean() - truth) > 10 * biased.std() / np.sqrt(draws)
  if same:
    assert truth == 0 and (unbiased < 0).any()  # an unbiased estimate of 0 goes negative
  else:
    assert truth > 0.05


def test_kid_near_zero_for_one_distribution_and_large_for_two():
  rs = np.random.RandomState(0)
  a, b = rs.normal(size=(3000, 16)), rs.normal(size=(3000, 16))
  same_mean, same_std = metrics.kid(a, b, num_subsets=50, subset_size=500)
  shifted_mean, _ = metrics.kid(a, b + 0.3, num_subsets=50, subset_size=500)
  assert abs(same_mean) < 3 * same_std / np.sqrt(50) + 1e-3
  assert shifted_mean > 20 * same_std


def test_fid_of_features_and_of_statistics_agree():
  rs = np.random.RandomState(0)
  a, b = rs.normal(size=(500, 6)), rs.normal(0.5, 1.2, size=(400, 6))
  from pga_jax.evaluation import frechet

  assert metrics.fid(a, b) == pytest.approx(metrics.fid(frechet.feature_statistics(a), b))
  assert abs(metrics.fid(a, a)) < 1e-8
  # Mean shift 0.5 in 6 dims, scale 1.2: ||dmu||^2 + 6 (1 - 1.2)^2 = 1.74 (up to sampling).
  assert metrics.fid(a, b) == pytest.approx(6 * 0.25 + 6 * 0.04, abs=0.4)


# ----------------------------------------------------- Fashion-MNIST, domain FID

TINY_SPEC = classifier_lib.ClassifierSpec(epochs=1, max_train_examples=12000)


@pytest.fixture(scope='module')
def fashion_splits():
  """Fashion-MNIST's train and test splits, read from its IDX files (no TensorFlow)."""
  directory = fashion_mnist_offline.local_files_dir()
  return data.load_split('idx', 'train', directory), data.load_split('idx', 'test', directory)


@pytest.fixture(scope='module')
def fashion(tmp_path_factory, fashion_splits):
  """The splits, an evaluator with a small classifier and its reference statistics."""
  train_split, test_split = fashion_splits
  cache = str(tmp_path_factory.mktemp('cache'))
  network = evaluate.domain_network(
    'fashion_mnist_idx', train_split, test_split, cache_dir=cache, spec=TINY_SPEC
  )
  reference = reference_stats.reference_statistics(
    train_split.images,
    network,
    dataset='fashion_mnist_idx',
    split='train',
    network_kind='domain',
    network_id=network.identity,
    cache_dir=cache,
  )
  evaluator = evaluate.Evaluator(
    'fashion_mnist_idx', network, reference, kid_subsets=50, kid_subset_size=500
  )
  return evaluator, train_split, test_split


def noisy(images_uint8, sigma, seed=0):
  x = pipeline.scale_images(images_uint8)
  eps = np.random.RandomState(seed).normal(size=x.shape).astype(np.float32)
  return evaluate.quantize(np.clip(x + sigma * eps, -1, 1))


def test_fid_real_test_vs_train_is_small_and_grows_with_noise(fashion):
  evaluator, _, test_split = fashion
  assert evaluator.network.info['test_accuracy'] > 0.75
  images = test_split.images[:2000]
  sigmas = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]
  reference = (evaluator.reference.mu, evaluator.reference.sigma)
  fids = [metrics.fid(reference, evaluator.features(noisy(images, s))) for s in sigmas]
  assert all(a < b for a, b in zip(fids, fids[1:])), fids
  # "Small": real test images are far closer to the train split than real images of
  # another distribution (half of the classes) are.
  half = test_split.images[test_split.labels < 5][:2000]
  other = metrics.fid(reference, evaluator.features(pipeline.scale_images(half)))
  assert fids[0] < 0.01 * other, (fids, other)


def test_precision_recall_kid_real_vs_real_and_vs_noise(fashion):
  """Real test vs train: P, R near 1, KID near 0. Uniform-noise images: R and FID/KID clear.

  Precision of noise is only required to be far below that of real images: noise
  images collapse to one tight cluster of features, and whether it lies inside
  the k-NN ball of some atypical real image (the few with the largest radii) is
  a property of the feature network, not of the metric (see
  test_precision_recall_of_real_images_and_noise_in_pixel_space).
  """
  evaluator, _, test_split = fashion
  real = evaluator.evaluate_images(pipeline.scale_images(test_split.images[:2000]))
  noise = np.random.RandomState(0).uniform(-1, 1, size=(2000, 28, 28, 1)).astype(np.float32)
  fake = evaluator.evaluate_images(evaluate.quantize(noise))
  assert real['precision'] > 0.8 and real['recall'] > 0.8, real
  assert fake['recall'] < 0.01 and fake['precision'] < real['precision'] - 0.3, fake
  assert abs(real['kid']) < real['kid_std'] and abs(real['kid']) < 0.01 * fake['kid']
  assert fake['fid'] > 100 * real['fid']
  assert real['num_pr_points'] == 2000 and fake['num_samples'] == 2000


def test_precision_recall_of_real_images_and_noise_in_pixel_space(fashion_splits):
  """The metric on real data where noise is truly far from every real point: pixels."""
  train_split, test_split = fashion_splits
  pixels = lambda x: pipeline.scale_images(x).reshape(len(x), -1)
  train_pixels = pixels(train_split.images[:2000])
  precision, recall = metrics.precision_recall(train_pixels, pixels(test_split.images[:2000]))
  assert precision > 0.7 and recall > 0.7
  noise = np.random.RandomState(0).uniform(-1, 1, size=(2000, 784))
  precision, recall = metrics.precision_recall(train_pixels, noise)
  assert precision == 0.0 and recall < 0.01


# --------------------------------------------------- reference statistics cache


def test_reference_statistics_cached_and_invalidated(tmp_path):
  images = helpers.synthetic_digits(50)[..., None]
  calls = []

  def features(x):
    calls.append(len(x))
    return x.reshape(len(x), -1)[:, :20] * 2.0

  kwargs = dict(
    dataset='d', split='train', network_kind='domain', cache_dir=str(tmp_path), subset_size=30
  )
  first = reference_stats.reference_statistics(images, features, network_id='net1', **kwargs)
  assert calls == [50] and first.features.shape == (30, 20) and first.meta['num_images'] == 50
  again = reference_stats.reference_statistics(images, features, network_id='net1', **kwargs)
  assert calls == [50]  # from the cache
  np.testing.assert_array_equal(first.mu, again.mu)
  np.testing.assert_array_equal(first.features, again.features)
  reference_stats.reference_statistics(images, features, network_id='net2', **kwargs)
  assert calls == [50, 50]  # another feature network
  changed = images.copy()
  changed[0, 0, 0, 0] ^= 1
  reference_stats.reference_statistics(changed, features, network_id='net1', **kwargs)
  assert calls == [50, 50, 50]  # other data
  # A damaged file is recomputed, not trusted; no temporary files are left behind.
  with open(first.meta['path'], 'wb') as f:
    f.write(b'garbage')
  reference_stats.reference_statistics(images, features, network_id='net1', **kwargs)
  assert calls == [50, 50, 50, 50]
  names = os.listdir(os.path.dirname(first.meta['path']))
  assert len(names) == 3 and all(n.endswith('.npz') and not n.startswith('.') for n in names)


# ------------------------------------------------------------- runs and the CLI


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A tiny run trained with evaluation every 4 steps (the classifier is trained on demand)."""
  folder = str(tmp_path_factory.mktemp('idx'))
  helpers.write_idx_images(folder, helpers.synthetic_digits(96))
  helpers.write_idx_images(folder, helpers.synthetic_digits(40, seed=1), prefix='t10k')
  workdir = str(tmp_path_factory.mktemp('run'))
  cache = str(tmp_path_factory.mktemp('cache'))
  config = helpers.tiny_config(folder, eval_every=4, eval_num_samples=16, sample_every=100)
  evaluate_fn = evaluate.training_evaluate_fn(config, cache_dir=cache)
  calls = []

  def recording_fn(model, params, step):
    calls.append(step)
    return evaluate_fn(model, params, step)

  train.train_and_evaluate(config, workdir, evaluate_fn=recording_fn)
  return workdir, cache, calls


def run_cli(*args, timeout=600):
  return helpers.run_cli(*args, timeout=timeout)


def read_scalars(workdir):
  """{tag: {step: [values, one per event file]}}, read with TensorBoard's own reader."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  out = {}
  for name in sorted(os.listdir(workdir)):
    if not name.startswith('events.out.tfevents'):
      continue
    acc = event_accumulator.EventAccumulator(
      os.path.join(workdir, name), size_guidance={'tensors': 0, 'scalars': 0}
    )
    acc.Reload()
    events = [
      (tag, e.step, tensor_util.make_ndarray(e.tensor_proto))
      for tag in acc.Tags()['tensors']
      for e in acc.Tensors(tag)
    ]
    events += [
      (tag, e.step, np.float32(e.value)) for tag in acc.Tags()['scalars'] for e in acc.Scalars(tag)
    ]
    for tag, step, value in events:
      if np.size(value) == 1:
        out.setdefault(tag, {}).setdefault(step, []).append(float(value))
  return out


def test_training_evaluates_every_eval_every_steps(tiny_run):
  workdir, cache, calls = tiny_run
  assert calls == [4, 6]  # every 4 steps, and at the end
  scalars = read_scalars(workdir)
  for name in evaluate.SCALARS + evaluate.CLASS_SCALARS:
    assert set(scalars[f'eval_domain/{name}']) == {4, 6}
  assert len(os.listdir(os.path.join(cache, 'classifiers'))) == 1  # trained on demand


def test_sharpness_and_class_mix_are_those_of_the_sampled_images(tiny_run):
  """Independently: sampling.sample's images (8 bits), scipy's Laplacian over the
  train split's, and the cached classifier's class counts against the test split's."""
  import glob

  import jax
  from scipy import ndimage

  from pga_jax import checkpointing, sampling

  workdir, cache, _ = tiny_run
  config, model, params, step = checkpointing.load_trained(workdir)
  evaluator = evaluate.evaluator_for_config(config, 'domain', cache_dir=cache)
  results = evaluate.evaluate_model(evaluator, model, params, config, 16, seed=0, step=step)
  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  images = evaluate.quantize(sampling.sample(model, params, jax.random.PRNGKey(0), 16, reference))

  def energy(x):
    x = np.asarray(x, np.float64)
    return np.mean([ndimage.laplace(im[..., 0])[1:-1, 1:-1] ** 2 for im in x])

  real = data.load_split('idx', 'train', config.data_dir)
  expected = energy(images) / energy(pipeline.scale_images(real.images))
  assert results['sharpness'] == pytest.approx(expected, rel=1e-9)
  (directory,) = glob.glob(os.path.join(cache, 'classifiers', '*'))
  clf = classifier_lib.load(directory)
  counts = np.bincount(clf.logits(images).argmax(-1), minlength=10)
  test = data.load_split('idx', 'test', config.data_dir)
  real_counts = np.bincount(clf.logits(test.images).argmax(-1), minlength=10)
  tv = 0.5 * np.abs(counts / 16 - real_counts / real_counts.sum()).sum()
  assert results['class_tv'] == pytest.approx(tv, rel=1e-9)
  np.testing.assert_allclose(results['class_fractions'], counts / 16)
  assert 0.1 <= results['class_confidence'] <= 1
  assert set(evaluate.CLASS_SCALARS) <= set(evaluate.scalar_names(results))


def test_pga_evaluate_reproduces_the_training_numbers_and_writes_json(tiny_run, tmp_path):
  workdir, cache, _ = tiny_run
  out_json = str(tmp_path / 'eval.json')
  # The run's eval settings (16 samples, seed = config.seed = 0) at the last step.
  out = run_cli(
    'evaluate',
    f'--workdir={workdir}',
    '--num_samples=16',
    '--features=domain',
    f'--cache_dir={cache}',
    f'--json={out_json}',
    '--seed=0',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'training one' not in out.stderr and 'using cached' in out.stderr  # all from the cache
  with open(out_json) as f:
    results = json.load(f)
  for key in evaluate.SCALARS + evaluate.CLASS_SCALARS:
    assert np.isfinite(results[key])
  assert results['num_samples'] == 16 and results['features'] == 'domain'
  assert results['seed'] == 0 and results['step'] == 6 and results['dataset'] == 'idx'
  assert len(results['feature_network']['identity']) == 64
  assert 0 <= results['feature_network']['test_accuracy'] <= 1
  assert os.path.isfile(results['reference']['cache'])
  # Logged to TensorBoard at the checkpoint's step, next to the value logged in training.
  logged = read_scalars(workdir)
  for name in evaluate.SCALARS + evaluate.CLASS_SCALARS:
    during_training, from_cli = logged[f'eval_domain/{name}'][6]
    assert during_training == pytest.approx(from_cli, rel=1e-5, abs=1e-7)
    assert from_cli == pytest.approx(results[name], rel=1e-5, abs=1e-7)


def test_pga_evaluate_inception_without_weights_is_a_one_line_error(tiny_run, tmp_path):
  workdir, cache, _ = tiny_run
  missing = str(tmp_path / 'nope' / 'fid_inception.npz')
  out = cli_inprocess.pga(
    'evaluate',
    f'--workdir={workdir}',
    '--num_samples=10',
    '--features=inception',
    f'--inception_weights={missing}',
    f'--cache_dir={cache}',
  )
  assert out.returncode == 2
  errors = [l for l in out.stderr.splitlines() if l.startswith('pga: error')]
  assert len(errors) == 1 and missing in errors[0] and 'Traceback' not in out.stderr


def test_pga_train_with_inception_evaluation_but_no_weights_fails_before_training(tmp_path):
  out = cli_inprocess.pga(
    'train',
    '--config=experiments/configs/quickstart.py',
    f'--workdir={tmp_path}/w',
    '--config.eval_every=2',
    '--config.eval_features=inception',
  )
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('pga: error')]
  assert len(errors) == 1 and 'config.eval_inception_weights' in errors[0]
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')
