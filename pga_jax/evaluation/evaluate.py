"""Sample quality of a trained run: FID, precision/recall (k=3), KID, sharpness, class mix.

Two feature networks:
  'inception': the FID Inception-v3 (pool3, 2048-d) of pytorch-fid/TTUR, the
      paper's measure. Needs the converted weights file (--inception_weights).
  'domain': the penultimate layer (256-d) of a CNN classifier trained on the
      dataset's labels (`pga_jax.evaluation.classifier`); works offline. It is
      trained on first use and cached.

As the reference implementation measures FID: generated samples are
quantized to 8 bits like real images, and compared with the statistics of
the dataset's *train* split. Samples are `pga_jax.sampling.sample` with the
run's reference latents and `jax.random.PRNGKey(seed)`, i.e. exactly the
images `pga sample --num=N --seed=SEED` writes; during training the seed is
the config's, so `pga evaluate --seed=<config.seed>
--num_samples=<config.eval_num_samples>` reproduces the logged numbers.

FID uses the statistics of the whole reference split and `num_samples`
samples; precision/recall use equally many real and generated points
(min(num_samples, 10000) real points of a fixed random subset); KID uses 100
random subsets of min(1000, ...) points of each.

Two more numbers describe the images themselves:
  sharpness: their Laplacian energy over the reference split's
      (`pga_jax.evaluation.sharpness`; 1.0 = as much fine detail as the data,
      below 1 blurrier, above 1 noisier).
  class_tv, class_confidence (domain features only): the total variation
      between the classifier's predicted class mix of the images and of the
      real test split, and the mean top-class probability
      (`pga_jax.evaluation.class_mix`), which FID charges for and
      precision/recall cannot see.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Iterable, Optional

import jax
import numpy as np
from absl import logging

from pga_jax import storage
from pga_jax.data.pipeline import scale_images, to_uint8
from pga_jax.evaluation import classifier as classifier_lib
from pga_jax.evaluation import class_mix as class_mix_lib
from pga_jax.evaluation import metrics, reference_stats, sharpness

FEATURES = ('domain', 'inception')
# Every evaluation's scalars; the domain features add CLASS_SCALARS.
SCALARS = ('fid', 'precision', 'recall', 'kid', 'kid_std', 'sharpness')
CLASS_SCALARS = ('class_tv', 'class_confidence')
REFERENCE_SPLIT = 'train'
CACHE_ENV_VAR = 'PGA_CACHE_DIR'


class EvaluationError(RuntimeError):
  """Evaluation cannot run as asked; the one-line message says why and what to do."""


def default_cache_dir() -> str:
  """$PGA_CACHE_DIR, else $XDG_CACHE_HOME/pga_jax, else ~/.cache/pga_jax."""
  if os.environ.get(CACHE_ENV_VAR):
    return os.environ[CACHE_ENV_VAR]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'pga_jax')


@dataclasses.dataclass
class FeatureNetwork:
  """images in [-1, 1] (N, S, S, C) float32 -> (N, D) features, with its identity.

  `classify`, where the network is a classifier, maps the same images to
  class probabilities (N, classes).
  """

  kind: str
  identity: str
  fn: Callable[[np.ndarray], np.ndarray]
  info: dict
  classify: Optional[Callable[[np.ndarray], np.ndarray]] = None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return self.fn(images)


def domain_network(
  dataset: str,
  train_split,
  test_split,
  *,
  cache_dir: str,
  classifier_dir: Optional[str] = None,
  spec: Optional[classifier_lib.ClassifierSpec] = None,
) -> FeatureNetwork:
  """The dataset's classifier (trained and saved first if missing) as a feature network."""
  spec = spec or classifier_lib.ClassifierSpec()
  data_fp = classifier_lib.fingerprint(
    train_split.images, train_split.labels, test_split.images, test_split.labels
  )
  directory = classifier_dir or classifier_lib.default_directory(cache_dir, dataset, spec, data_fp)
  try:
    clf = classifier_lib.load_or_train(directory, dataset, spec, train_split, test_split, data_fp)
  except classifier_lib.ClassifierError as err:
    raise EvaluationError(str(err)) from err
  info = {
    'kind': 'domain',
    'identity': clf.identity,
    'directory': clf.directory,
    'test_accuracy': clf.test_accuracy,
    'feature_dim': clf.module.dense_features,
    'spec': clf.info['spec'],
  }
  return FeatureNetwork(
    'domain', clf.identity, clf.features, info, classify=lambda x: softmax(clf.logits(x))
  )


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax in float64."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def inception_network(
  weights_path: Optional[str], flag: str = '--inception_weights'
) -> FeatureNetwork:
  """The FID Inception network from converted weights (see convert_inception)."""
  from pga_jax.evaluation import inception  # pylint: disable=g-import-not-at-top

  how = (
    "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with `python -m "
    'pga_jax.evaluation.convert_inception --torch_weights=... --out=PATH`'
  )
  if not weights_path:
    raise EvaluationError(
      f'features=inception needs the FID Inception weights: set {flag}=PATH ({how})'
    )
  if not os.path.isfile(weights_path):
    raise EvaluationError(f'FID Inception weights not found at {weights_path!r} ({flag}); {how}')
  try:
    params = inception.load_inception(weights_path)
  except (ValueError, OSError) as err:
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    raise EvaluationError(
      f'cannot use the FID Inception weights {weights_path!r}: {first_line}'
    ) from err
  identity = storage.sha256(weights_path)
  info = {
    'kind': 'inception',
    'identity': identity,
    'weights': os.path.abspath(weights_path),
    'feature_dim': inception.FEATURE_DIM,
  }
  return FeatureNetwork(
    'inception', identity, lambda images: inception.inception_features(params, images), info
  )


@dataclasses.dataclass
class Evaluator:
  """A feature network and the reference statistics of a real split.

  reference_energy: the Laplacian energy of the reference split (the 1.0 of
    sharpness); real_class_mix: the classifier's class mix of the real test
    split (`class_mix.class_mix`), None where the network has no classes.
  """

  dataset: str
  network: FeatureNetwork
  reference: reference_stats.ReferenceStats
  k: int = metrics.K_NEAREST
  kid_subsets: int = metrics.KID_SUBSETS
  kid_subset_size: int = metrics.KID_SUBSET_SIZE
  reference_energy: Optional[float] = None
  real_class_mix: Optional[dict] = None

  def features(self, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    return np.concatenate(
      [
        self.network(np.asarray(images[i : i + chunk], np.float32))
        for i in range(0, len(images), chunk)
      ]
    )

  def evaluate_features(self, fake_features: np.ndarray, seed: int = 0) -> dict:
    """Metrics of generated features against the reference, plus what they were computed on."""
    results = metrics.all_metrics(
      self.reference.features,
      fake_features,
      real_statistics=(self.reference.mu, self.reference.sigma),
      k=self.k,
      kid_subsets=self.kid_subsets,
      kid_subset_size=self.kid_subset_size,
      seed=seed,
    )
    results.update(
      {
        'num_samples': int(len(fake_features)),
        'features': self.network.kind,
        'feature_network': self.network.info,
        'dataset': self.dataset,
        'reference': {
          'split': self.reference.meta['split'],
          'num_images': self.reference.meta['num_images'],
          'num_subset_features': int(len(self.reference.features)),
          'cache': self.reference.meta.get('path'),
        },
        'k': self.k,
        'kid_subsets': self.kid_subsets,
        'kid_subset_size': int(
          min(self.kid_subset_size, len(fake_features), len(self.reference.features))
        ),
      }
    )
    return results

  def evaluate_images(self, images: np.ndarray, seed: int = 0, chunk: int = 1000) -> dict:
    """Metrics of images in [-1, 1] (N, S, S, C) against the reference."""
    return self.evaluate_chunks((images[i : i + chunk] for i in range(0, len(images), chunk)), seed)

  def evaluate_chunks(self, chunks: Iterable[np.ndarray], seed: int = 0) -> dict:
    """Metrics of images given chunk by chunk (each (n, S, S, C) in [-1, 1]):
    the feature metrics, sharpness, and the class mix where the network classifies."""
    features, probabilities = [], []
    energy = sharpness.EnergySum()
    for images in chunks:
      images = np.asarray(images, np.float32)
      features.append(self.network(images))
      energy.add(images)
      if self.real_class_mix is not None:
        probabilities.append(self.network.classify(images))
    results = self.evaluate_features(np.concatenate(features), seed)
    results['laplacian_energy'] = energy.energy
    if self.reference_energy:
      results['sharpness'] = energy.energy / self.reference_energy
      results['reference_laplacian_energy'] = self.reference_energy
    if self.real_class_mix is not None:
      mix = class_mix_lib.class_mix(np.concatenate(probabilities))
      results['class_fractions'] = mix['fractions']
      results['class_confidence'] = mix['confidence']
      results['class_tv'] = class_mix_lib.total_variation(
        mix['fractions'], self.real_class_mix['fractions']
      )
      results['real_class_mix'] = self.real_class_mix
    return results


def load_split(dataset: str, split: str, data_dir: Optional[str], image_size: int, channels: int):
  from pga_jax import data  # pylint: disable=g-import-not-at-top

  return data.load_split(dataset, split, data_dir, image_size=image_size, channels=channels)


def build_evaluator(
  dataset: str,
  data_dir: Optional[str],
  image_size: int,
  channels: int,
  features: str = 'domain',
  *,
  inception_weights: Optional[str] = None,
  inception_flag: str = '--inception_weights',
  reference_split: str = REFERENCE_SPLIT,
  cache_dir: Optional[str] = None,
  classifier_dir: Optional[str] = None,
  classifier_spec: Optional[classifier_lib.ClassifierSpec] = None,
  subset_size: int = reference_stats.DEFAULT_SUBSET_SIZE,
  use_cache: bool = True,
) -> Evaluator:
  """Loads data, the feature network (training the classifier if needed) and the reference.

  Raises EvaluationError, pga_jax.data.DatasetError (one-line messages).
  """
  if features not in FEATURES:
    raise EvaluationError(f'unknown features {features!r}; choose one of {FEATURES}')
  cache_dir = cache_dir or default_cache_dir()
  network = None
  if features == 'inception':  # check the weights before loading any data
    network = inception_network(inception_weights, inception_flag)
  reference_images = load_split(dataset, reference_split, data_dir, image_size, channels)
  if features == 'domain':
    train_split = (
      reference_images
      if reference_split == 'train'
      else load_split(dataset, 'train', data_dir, image_size, channels)
    )
    test_split = load_split(dataset, 'test', data_dir, image_size, channels)
    network = domain_network(
      dataset,
      train_split,
      test_split,
      cache_dir=cache_dir,
      classifier_dir=classifier_dir,
      spec=classifier_spec,
    )
    real_mix = class_mix_lib.class_mix(network.classify(test_split.images))
  else:
    real_mix = None
  reference = reference_stats.reference_statistics(
    reference_images.images,
    network,
    dataset=dataset,
    split=reference_split,
    network_kind=network.kind,
    network_id=network.identity,
    cache_dir=cache_dir if use_cache else None,
    subset_size=subset_size,
  )
  return Evaluator(
    dataset,
    network,
    reference,
    reference_energy=sharpness.laplacian_energy(reference_images.images),
    real_class_mix=real_mix,
  )


def evaluator_for_config(config, features: Optional[str] = None, **kwargs) -> Evaluator:
  """`build_evaluator` for a run's config (dataset, data_dir, image shape)."""
  from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  size, _, channels = config_lib.image_shape(config)
  return build_evaluator(
    config.dataset, config.data_dir, size, channels, features or config.eval_features, **kwargs
  )


def quantize(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats rounded to the 256 levels of 8-bit images (as saved samples are)."""
  return scale_images(to_uint8(images))


def quantized_samples(model, params, config, num_samples: int, seed: int, chunk: int = 1000):
  """Yields, chunk by chunk, the evaluation's `num_samples` samples g(z), z from
  PRNGKey(seed) (the latents of sampling.sample(model, params, PRNGKey(seed),
  num_samples, reference)), quantized to 8 bits."""
  from pga_jax import sampling  # pylint: disable=g-import-not-at-top

  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  latents = jax.random.normal(jax.random.PRNGKey(seed), (num_samples, model.latent_dim))
  for i in range(0, num_samples, chunk):
    yield quantize(sampling.decode_latents(model, params, latents[i : i + chunk], reference))


def evaluate_model(
  evaluator: Evaluator,
  model,
  params,
  config,
  num_samples: int,
  seed: int = 0,
  step: Optional[int] = None,
) -> dict:
  """Metrics of the model's samples; the result records num_samples, seed and step."""
  if num_samples < 2:
    raise EvaluationError(f'num_samples must be >= 2, got {num_samples}')
  start = time.time()
  results = evaluator.evaluate_chunks(
    quantized_samples(model, params, config, num_samples, seed), seed
  )
  results.update(
    {'source': 'samples', 'seed': seed, 'step': step, 'seconds': round(time.time() - start, 1)}
  )
  return results


def scalar_names(results: dict) -> tuple:
  """The scalar metrics a result holds: SCALARS, and CLASS_SCALARS where computed."""
  return tuple(name for name in SCALARS + CLASS_SCALARS if name in results)


def scalar_summaries(results: dict) -> dict:
  """The TensorBoard scalars of a result: eval_<features>/<metric>."""
  return {
    f'eval_{results["features"]}/{name}': float(results[name]) for name in scalar_names(results)
  }


def training_evaluate_fn(config, cache_dir: Optional[str] = None) -> Callable:
  """`evaluate_fn(model, params, step) -> scalars` for `train.train_and_evaluate`.

  Builds the evaluator now (training the classifier or computing reference
  statistics if they are not cached), so a problem shows before training.
  Each call draws `config.eval_num_samples` samples with `PRNGKey(config.seed)`.
  """
  from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  config_lib.validate(config, jax.device_count())  # name a bad field before any work
  if config.eval_features == 'inception' and not config.eval_inception_weights:
    raise EvaluationError(
      'config.eval_features is inception, which needs the FID Inception weights: set '
      '--config.eval_inception_weights=PATH (see `python -m pga_jax.evaluation.'
      'convert_inception`), or use --config.eval_features=domain, or --config.eval_every=0'
    )
  evaluator = evaluator_for_config(
    config,
    inception_weights=config.eval_inception_weights,
    inception_flag='config.eval_inception_weights',
    cache_dir=cache_dir,
  )

  def evaluate_fn(model, params, step):
    results = evaluate_model(
      evaluator, model, params, config, config.eval_num_samples, seed=config.seed, step=int(step)
    )
    scalars = scalar_summaries(results)
    logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4g}' for k, v in scalars.items()))
    return scalars

  return evaluate_fn


def to_json(results: dict) -> str:
  """The results as `pga evaluate` prints them (`storage.write_json` writes the same text)."""
  return json.dumps(results, indent=2, sort_keys=True, default=float)
