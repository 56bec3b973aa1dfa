"""pga train_classifier --dataset=NAME | --workdir=DIR [--classifier_dir=DIR]

Trains the domain feature network of `pga evaluate --features=domain` (a CNN
classifier on the dataset's labels), saves it with orbax and reports its test
accuracy. If the classifier already exists it is loaded and its stored
accuracy reported. (`pga evaluate` also trains it on first use.)
"""

from __future__ import annotations

import json

from absl import flags

from pga_jax.commands import common
from pga_jax.data import catalog


def define_flags():
  common.define_dataset_flags('Dataset (a labelled tfds dataset, e.g. fashion_mnist).')
  flags.DEFINE_string('workdir', None, 'Or: a run directory; its dataset is used.')
  flags.DEFINE_string(
    'cache_dir', None, 'Cache directory (default: $PGA_CACHE_DIR or ~/.cache/pga_jax).'
  )
  flags.DEFINE_string(
    'classifier_dir',
    None,
    'Classifier directory (default: <cache_dir>/classifiers/<dataset>-<hash>).',
  )


def main(argv):
  del argv
  from pga_jax import checkpointing, data  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  if bool(f.dataset) == bool(f.workdir):
    common.user_error(ValueError('pass either --dataset=NAME or --workdir=DIR'))
  if f.workdir:
    try:
      config = checkpointing.load_config(f.workdir)
    except checkpointing.WorkdirError as err:
      common.user_error(err)
    dataset, data_dir = config.dataset, config.data_dir
    size, _, channels = config_lib.image_shape(config)
  else:
    dataset, data_dir = f.dataset, f.data_dir
    if dataset not in catalog.TFDS_SHAPES:
      common.user_error(
        ValueError(
          f'--dataset={dataset!r}: choose one of '
          f'{sorted(catalog.TFDS_SHAPES)} (other data: --workdir)'
        )
      )
    size, channels = catalog.TFDS_SHAPES[dataset]
  try:
    train_split = evaluate.load_split(dataset, 'train', data_dir, size, channels)
    test_split = evaluate.load_split(dataset, 'test', data_dir, size, channels)
    network = evaluate.domain_network(
      dataset,
      train_split,
      test_split,
      cache_dir=f.cache_dir or evaluate.default_cache_dir(),
      classifier_dir=f.classifier_dir,
    )
  except (evaluate.EvaluationError, data.DatasetError) as err:
    common.user_error(err)
  print(json.dumps(network.info, indent=2, sort_keys=True))
  print(
    f'pga: classifier for {dataset}: test accuracy {network.info["test_accuracy"]:.4f} '
    f'({len(test_split.images)} test images)'
  )
  print(f'pga: saved in {network.info["directory"]}')
