"""pga evaluate --workdir=DIR --num_samples=N --features=domain|inception [--json=PATH]

Sample quality of a trained run: FID, precision and recall (k=3) and KID, on
the features of the FID Inception network (the paper's measure; needs
--inception_weights) or of a classifier trained on the dataset's labels
(--features=domain, offline; trained and cached on first use). Writes a JSON
(default DIR/eval/<features>_step<STEP>.json), prints it, and logs the scalars
to TensorBoard in DIR at the checkpoint's step.

Baseline of real data instead of samples:
  pga evaluate --dataset=fashion_mnist --real_split=test --num_samples=10000
compares images of the test split with the train split's reference.
"""

from __future__ import annotations

from absl import flags

from pga_jax.commands import common


def define_flags():
  common.define_checkpoint_flags()
  flags.DEFINE_integer('num_samples', 10000, 'Number of generated (or real) images to evaluate.')
  flags.DEFINE_enum(
    'features',
    'domain',
    ['domain', 'inception'],
    'Feature network: the dataset classifier, or the FID Inception network.',
  )
  flags.DEFINE_string(
    'json',
    None,
    'Output JSON (default: WORKDIR/eval/<features>_step<STEP>.json; '
    'with --real_split and no --workdir: only printed).',
  )
  flags.DEFINE_integer(
    'seed',
    0,
    'Seed of the latents (jax.random.PRNGKey(seed), as `pga sample`) and of the KID subsets.',
  )
  flags.DEFINE_string(
    'inception_weights',
    None,
    'FID Inception weights (.npz from `python -m '
    'pga_jax.evaluation.convert_inception`); needed by --features=inception.',
  )
  flags.DEFINE_string(
    'cache_dir',
    None,
    'Cache of classifiers and reference statistics (default: $PGA_CACHE_DIR or ~/.cache/pga_jax).',
  )
  flags.DEFINE_string(
    'classifier_dir',
    None,
    'Domain classifier directory (default: '
    '<cache_dir>/classifiers/<dataset>-<hash>); trained there if missing.',
  )
  flags.DEFINE_string('reference_split', 'train', 'Real split the samples are compared with.')
  flags.DEFINE_string(
    'real_split',
    None,
    'Evaluate the first --num_samples images of this real '
    'split instead of samples (a baseline); needs --dataset or --workdir.',
  )
  common.define_dataset_flags('Dataset for --real_split without --workdir.')
  flags.DEFINE_bool('tensorboard', True, 'Log the scalars to TensorBoard in --workdir.')


def _dataset_config(f):
  """(config-like object with dataset, data_dir, image shape) for --dataset."""
  from pga_jax import config as config_lib, data  # pylint: disable=g-import-not-at-top

  config = config_lib.base_config('lpga')
  config.dataset = f.dataset
  config.data_dir = f.data_dir
  if f.dataset not in data.DATASETS:
    common.user_error(ValueError(f'--dataset={f.dataset!r}: choose one of {data.DATASETS}'))
  if f.dataset in ('folder', 'idx'):
    common.user_error(
      ValueError(
        f'--dataset={f.dataset!r} takes its image size from a run; '
        'pass --workdir of a run on that data instead'
      )
    )
  return config


def main(argv):
  del argv
  from pga_jax import data, event_logs, storage  # pylint: disable=g-import-not-at-top
  from pga_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  if not f.workdir and not (f.real_split and f.dataset):
    common.user_error(
      ValueError(
        'pass --workdir=DIR (a trained run), or --dataset=NAME with '
        '--real_split=SPLIT for a real-data baseline'
      )
    )
  if f.num_samples < 2:
    common.user_error(ValueError(f'--num_samples must be >= 2, got {f.num_samples}'))
  if f.workdir:
    if f.real_split:
      from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top

      try:
        config, model, params, step = checkpointing.load_config(f.workdir), None, None, None
      except checkpointing.WorkdirError as err:
        common.user_error(err)
    else:
      config, model, params, step = common.load_run(f.workdir, f.step)
  else:
    config, model, params, step = _dataset_config(f), None, None, None

  path = f.json
  if path is None and f.workdir:
    tag = f'real_{f.real_split}' if f.real_split else f'step{step}'
    path = storage.join(f.workdir, 'eval', f'{f.features}_{tag}_n{f.num_samples}.json')
  _check_outputs(f, path)

  try:
    evaluator = evaluate.evaluator_for_config(
      config,
      f.features,
      inception_weights=f.inception_weights,
      reference_split=f.reference_split,
      cache_dir=f.cache_dir,
      classifier_dir=f.classifier_dir,
    )
    if f.real_split:
      images = evaluate.load_split(
        evaluator.dataset, f.real_split, config.data_dir, *_shape(config)
      ).images[: f.num_samples]
      results = evaluator.evaluate_images(pipeline.scale_images(images), f.seed)
      results.update({'source': f'real:{f.real_split}', 'seed': f.seed, 'step': None})
    else:
      results = evaluate.evaluate_model(
        evaluator, model, params, config, f.num_samples, seed=f.seed, step=step
      )
  except (evaluate.EvaluationError, data.DatasetError) as err:
    common.user_error(err)
  results['workdir'] = storage.absolute(f.workdir) if f.workdir else None

  try:
    if path:
      storage.write_json(path, results)
    if f.workdir and f.tensorboard and not f.real_split:
      writer = event_logs.create_writer(f.workdir)
      writer.write_scalars(step, evaluate.scalar_summaries(results))
      writer.close()
  except OSError as err:  # checked before the work: this failed during it (exit status 1)
    common.work_error(OSError(f'cannot write the results ({storage.describe(err)})'))
  print(evaluate.to_json(results))
  summary = ', '.join(f'{k} {results[k]:.4g}' for k in evaluate.scalar_names(results))
  print(
    f'pga: {f.features} features, {results["num_samples"]} '
    f'{"images of " + f.real_split if f.real_split else "samples"}: {summary}'
  )
  if path:
    print(f'pga: wrote {path}')


def _check_outputs(f, path):
  """Fails before any work if the JSON or the TensorBoard logs cannot be written."""
  from pga_jax import storage  # pylint: disable=g-import-not-at-top

  if path:
    common.check_writable('json', path)
  if f.workdir and f.tensorboard and not f.real_split:
    try:
      storage.check_writable(
        f.workdir,
        what='--workdir',
        fix='pass --notensorboard (and --json=PATH elsewhere) or make the workdir writable',
      )
    except storage.StorageError as err:
      common.user_error(ValueError(f'TensorBoard logs: {err}'))


def _shape(config):
  from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  size, _, channels = config_lib.image_shape(config)
  return size, channels
