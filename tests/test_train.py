"""End to end: the CLI path trains, resumes exactly, writes figures; config checks."""

import json
import os
import threading

import jax
import numpy as np
import pytest

from pga_jax import checkpointing, config as config_lib, conv_forms, train
from tests import cli_inprocess, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  return helpers.make_idx_dir(tmp_path_factory, num_test=40)


def params_of(result):
  return jax.tree_util.tree_leaves(jax.device_get(result.state.params))


def test_interrupted_and_resumed_run_ends_with_identical_parameters(idx_dir, tmp_path):
  straight = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(tmp_path / 'a'))
  first = train.train_and_evaluate(helpers.tiny_config(idx_dir, num_steps=4), str(tmp_path / 'b'))
  assert first.step == 4
  resumed = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(tmp_path / 'b'))
  assert straight.step == resumed.step == 6
  for a, b in zip(params_of(straight), params_of(resumed)):
    np.testing.assert_array_equal(a, b)
  # ... and training really moved the parameters.
  fresh = first.state  # state after 4 steps differs from after 6
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(fresh.params)), params_of(straight))
  )


def test_stop_event_checkpoints_after_current_step(idx_dir, tmp_path):
  stop = threading.Event()
  stop.set()
  result = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(tmp_path), stop_event=stop)
  assert result.preempted and result.step == 1
  manager = checkpointing.checkpoint_manager(str(tmp_path), 3)
  assert manager.latest_step() == 1


def test_keep_checkpoint_every_keeps_multiples_beside_the_newest(idx_dir, tmp_path):
  config = helpers.tiny_config(
    idx_dir, num_steps=7, checkpoint_every=1, keep_checkpoints=2, keep_checkpoint_every=3
  )
  train.train_and_evaluate(config, str(tmp_path))
  assert sorted(checkpointing.checkpoint_manager(str(tmp_path), 2).all_steps()) == [3, 6, 7]
  # Without it only the newest two stay.
  train.train_and_evaluate(
    helpers.tiny_config(idx_dir, **dict(num_steps=7, checkpoint_every=1, keep_checkpoints=2)),
    str(tmp_path / 'b'),
  )
  assert sorted(checkpointing.checkpoint_manager(str(tmp_path / 'b'), 2).all_steps()) == [6, 7]
  # The kept step can be loaded, as `pga sample --step` does.
  assert checkpointing.load_trained(str(tmp_path), 3)[3] == 3


def test_resuming_with_an_incompatible_config_is_an_error(idx_dir, tmp_path):
  train.train_and_evaluate(helpers.tiny_config(idx_dir, num_steps=1), str(tmp_path))
  with pytest.raises(checkpointing.WorkdirError, match='latent_dim'):
    train.train_and_evaluate(helpers.tiny_config(idx_dir, latent_dim=5), str(tmp_path))


def run_cli(*args, timeout=300):
  return helpers.run_cli(*args, timeout=timeout)


def test_cli_train_then_sample_reconstruct_interpolate(idx_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
    'from tests import helpers\n'
    f'def get_config():\n  return helpers.tiny_config({idx_dir!r}, method="vpga")\n'
  )
  out = run_cli(
    'train',
    f'--config={config_file}',
    f'--workdir={workdir}',
    '--config.num_steps=3',
    '--config.latent_dim=6',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'training finished at step 3' in out.stdout
  stored = json.load(open(os.path.join(workdir, 'config.json')))
  assert stored['latent_dim'] == 6 and stored['method'] == 'vpga'
  for name in ('samples', 'reconstructions', 'interpolations'):
    assert os.path.exists(os.path.join(workdir, 'figures', f'{name}_latest.png'))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  # The convolution forms the run chose (conv_impl 'auto'), kept for its resume.
  forms = json.load(open(os.path.join(workdir, conv_forms.RUN_FILE)))
  assert {key.split('|')[0] for key in forms} == {'upsample', 'downsample'}
  assert set(forms.values()) <= {'xla', 'phase', 'adjoint', 'adjoint_xla', 'fused'}

  # The run's commands in this process (`pga train` above was a process of its own).
  out = cli_inprocess.pga('sample', f'--workdir={workdir}', '--num=7', f'--out={tmp_path}/s.npz')
  assert out.returncode == 0, out.tail()
  samples = np.load(tmp_path / 's.npz')['images']
  assert samples.shape == (7, 28, 28, 1) and samples.dtype == np.uint8
  out = cli_inprocess.pga(
    'reconstruct', f'--workdir={workdir}', '--num=4', f'--out={tmp_path}/r.png'
  )
  assert out.returncode == 0 and os.path.exists(tmp_path / 'r.png'), out.tail()
  out = cli_inprocess.pga(
    'interpolate', f'--workdir={workdir}', '--num=2', f'--out={tmp_path}/i.npz'
  )
  assert out.returncode == 0, out.tail()
  assert np.load(tmp_path / 'i.npz')['images'].shape == (2, 9, 28, 28, 1)


def test_cli_reports_bad_config_and_missing_run_without_traceback(tmp_path):
  out = cli_inprocess.pga(
    'train',
    '--config=experiments/configs/quickstart.py',
    f'--workdir={tmp_path}/w',
    '--config.arch=conv_64',
  )
  assert out.returncode == 2
  assert 'config.arch' in out.stderr and 'Traceback' not in out.stderr
  out = cli_inprocess.pga('sample', f'--workdir={tmp_path}/nothing', f'--out={tmp_path}/x.png')
  assert out.returncode == 2 and 'not a pga_jax run directory' in out.stderr


INVALID = [
  ('method', 'gan'),
  ('arch', 'vgg'),
  ('latent_dim', 0),
  ('batch_size', 0),
  ('zn_rec', -1.0),
  ('nll', -0.5),
  ('num_perturbations', 0),
  ('dataset', 'imagenet'),
  ('init_steps', -3),
  ('compute_dtype', 'float16'),
  ('num_steps', 0),
]


@pytest.mark.parametrize('field,value', INVALID)
def test_config_validation_names_the_field(field, value):
  config = config_lib.base_config('lpga')
  config[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'config.{field}'):
    config_lib.validate(config)


def test_config_validation_batch_divisibility_and_optimizer():
  config = config_lib.base_config('lpga')
  config.batch_size = 6
  with pytest.raises(config_lib.ConfigError, match='divisible'):
    config_lib.validate(config, device_count=4)
  config_lib.validate(config, device_count=3)
  config.optimizer.name = 'rmsprop'
  with pytest.raises(config_lib.ConfigError, match='optimizer.name'):
    config_lib.validate(config)


def test_every_experiment_config_is_valid():
  import importlib.util

  folder = os.path.join(REPO, 'experiments', 'configs')
  names = sorted(f for f in os.listdir(folder) if f.endswith('.py') and f != '__init__.py')
  assert len(names) >= 13
  for name in names:
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(folder, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config_lib.validate(module.get_config())


# The reference's published settings, copied from docs/reference_code.md
# ("Published settings"; not from our config code): (file, {field: value}).
# Every CIFAR-10 and every CelebA PGA run shares its dataset's latent size and
# latent regularisers.
CIFAR10 = dict(latent_dim=128, zn_rec=3e-2)
CELEBA = dict(latent_dim=128, zn_rec=3e-2, zh_rec=1e-2)
PUBLISHED = [
  (
    'mnist_lpga',
    dict(
      arch='conv_mnist',
      use_bn=False,
      latent_dim=12,
      zn_rec=6e-2,
      zh_rec=0.0,
      nll=1.5e-2,
      init_steps=3000,
      lr=0.1,
      steps=600 * 60000 // 64,
    ),
  ),
  ('mnist_vpga', dict(latent_dim=32, zn_rec=6e-2, vrec=1e-2, vkld=2e-2, init_steps=0, lr=0.1)),
  ('mnist_lvpga', dict(latent_dim=32, zn_rec=6e-2, vrec=2e-2, vkld=2e-2, nll=0.0, init_steps=3000)),
  (
    'cifar10_lpga',
    dict(CIFAR10, arch='conv_32', use_bn=True, nll=1.5e-2, lr=0.2, steps=400 * 50000 // 64),
  ),
  ('cifar10_vpga', dict(CIFAR10, vrec=5e-3, vkld=3e-2, lr=0.2)),
  ('cifar10_lvpga', dict(CIFAR10, vrec=1.5e-2, vkld=5e-2, nll=2e-2)),
  (
    'celeba_lpga',
    dict(CELEBA, arch='conv_64', use_bn=True, nll=1e-2, lr=0.4, steps=100 * 162770 // 64),
  ),
  ('celeba_vpga', dict(CELEBA, vkld=2e-3, vrec=1e-2, steps=60 * 162770 // 64)),
  ('celeba_lvpga', dict(CELEBA, vrec=1e-2, vkld=5e-3, nll=1e-2)),
  ('mnist_vae', dict(beta=0.1, lr=0.1, optimizer='sgd', arch='conv_mnist')),
  ('cifar10_vae', dict(beta=0.05, lr=0.2, optimizer='sgd', arch='conv_32', latent_dim=128)),
  ('celeba_vae', dict(beta=0.05, lr=0.4, optimizer='sgd', arch='conv_64', use_bn=True)),
  ('mnist_vae_adam', dict(beta=0.1, lr=2e-4, optimizer='adam', b1=0.5, arch='conv_mnist')),
  ('cifar10_vae_adam', dict(beta=0.05, lr=2e-4, optimizer='adam', b1=0.5, latent_dim=128)),
  ('celeba_vae_adam', dict(beta=0.05, lr=2e-4, optimizer='adam', b1=0.5, arch='conv_64')),
]


@pytest.mark.parametrize('name,expected', PUBLISHED)
def test_experiment_configs_hold_the_published_settings(name, expected):
  import importlib.util

  path = os.path.join(REPO, 'experiments', 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.batch_size == 64 and config.optimizer.momentum == 0.9
  for field, value in expected.items():
    actual = {
      'lr': config.optimizer.learning_rate,
      'steps': config.num_steps,
      'optimizer': config.optimizer.name,
      'b1': config.optimizer.b1,
    }.get(field, config.get(field))
    assert actual == pytest.approx(value) if isinstance(value, float) else actual == value, field
