"""The `pga` command as a newcomer meets it.

Every case checks the exit status (0 success or stopped by a signal, 1 a
failure during the work, 2 a usage or input error), that the problem is named
in one `pga: error:` line, and that no Python traceback reaches the console.
The cases that load a trained run share one tiny run (module fixture).

`pga(...)` runs `pga` as a real process where the process is part of what is
checked: the trained runs (what reaches the console of a whole run), one
usage error (a process ending through `os._exit` before TensorFlow is
imported), the unknown command, evaluate and train failing on a read-only
folder, a full disk (a file size limit), no network. `in_process(...)`
(tests/cli_inprocess.py) runs it in the pytest process for the other usage
and input errors, where the exit status, the error line and the files
written are what is checked.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests import helpers
from tests.cli_inprocess import pga as in_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (
  'train',
  'sample',
  'reconstruct',
  'interpolate',
  'evaluate',
  'train_classifier',
  'benchmark',
)
# Log lines of the libraries underneath (TensorFlow, orbax, tfds) and the run's
# detail (its hyperparameters): they belong in pga.log, not on the console.
LIBRARY_NOISE = (
  'oneDNN',
  'absl::InitializeLog',
  'CheckpointManagerOptions',
  'Downloading and preparing',
  '[Hyperparameters]',
  'images: {',
)


def config_text(data_dir: str, dataset: str = 'idx') -> str:
  """A three-step LPGA run's config file (samples and a checkpoint at step 3: TINY_FIELDS)."""
  return helpers.config_file_text(data_dir, dataset=dataset, num_steps=3, init_steps=1, log_every=1)


def pga(*args, timeout=300, wrapper=(), cwd=REPO):
  """Runs `pga ARGS` (python -m pga_jax.cli) to completion; stdout+stderr in `.output`."""
  start = time.time()
  proc = subprocess.run(
    [*wrapper, sys.executable, '-m', 'pga_jax.cli', *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  proc.output = proc.stdout + proc.stderr
  proc.seconds = time.time() - start
  return proc


def the_error(proc, status: int, *expected: str) -> str:
  """The single one-line `pga: error:` of a run that failed with `status`."""
  tail = proc.output[-3000:]
  assert proc.returncode == status, tail
  assert 'Traceback' not in proc.output, tail
  errors = [line for line in proc.stderr.splitlines() if line.startswith('pga: error:')]
  assert len(errors) == 1, tail
  for text in expected:
    assert text in errors[0], f'{text!r} not in {errors[0]!r}'
  return errors[0]


@contextlib.contextmanager
def read_only(path: str):
  """`path` cannot be written, even by root (chattr +i), meanwhile."""
  if os.geteuid() == 0:
    subprocess.run(['chattr', '+i', path], check=True)
    try:
      yield
    finally:
      subprocess.run(['chattr', '-i', path], check=True)
  else:
    mode = os.stat(path).st_mode
    os.chmod(path, 0o555)
    try:
      yield
    finally:
      os.chmod(path, mode)


def write_config(folder, data_dir: str, dataset: str = 'idx') -> str:
  path = os.path.join(str(folder), 'tiny_config.py')
  with open(path, 'w') as f:
    f.write(config_text(data_dir, dataset))
  return path


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny trained LPGA run on synthetic IDX data: (config file, workdir, console output)."""
  root = tmp_path_factory.mktemp('newcomer')
  data_dir = str(root / 'data')
  helpers.write_idx_images(data_dir, helpers.synthetic_digits(32), 'train')
  helpers.write_idx_images(data_dir, helpers.synthetic_digits(24, seed=1), 't10k')
  config = write_config(root, data_dir)
  workdir = str(root / 'run')
  proc = pga('train', f'--config={config}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.output[-3000:]
  return config, workdir, proc


# 1. --help for every subcommand; an unknown command says so.


def test_every_subcommand_help_lists_its_own_flags_and_exits_0():
  own_flags = {
    'train': ['--config', '--workdir', '--config.FIELD=VALUE'],
    'sample': ['--workdir', '--num', '--out', '--seed'],
    'reconstruct': ['--workdir', '--num', '--split', '--out'],
    'interpolate': ['--num', '--steps', '--split', '--out'],
    'evaluate': ['--workdir', '--num_samples', '--features', '--json'],
    'train_classifier': ['--dataset', '--workdir', '--classifier_dir'],
    'benchmark': ['--config', '--steps', '--peer_command'],
  }
  for command in COMMANDS:
    proc = in_process(command, '--help')
    assert proc.returncode == 0, (command, proc.output[-2000:])
    assert 'Try --helpfull' not in proc.output and 'Traceback' not in proc.output
    listed = [line.strip() for line in proc.stdout.splitlines()]
    for flag in own_flags[command]:
      assert flag in listed, (command, flag, proc.stdout)
    assert proc.stdout.startswith(f'pga {command}'), proc.stdout[:200]


def test_an_unknown_command_is_named_with_a_suggestion():
  proc = pga('trian', timeout=60)
  the_error(proc, 2, "unknown command 'trian'", "did you mean 'train'?")
  assert 'usage: pga {train,' in proc.stderr
  top = pga('--help', timeout=60)
  assert top.returncode == 0 and 'pga train_classifier' in top.stdout, top.output[-2000:]
  bare = pga(timeout=60)
  assert bare.returncode == 2 and 'usage: pga {train,' in bare.stderr, bare.output[-2000:]


# 3 and 8. Usage errors: one line, exit 2, before any work.


def test_flag_and_config_file_errors_are_one_line_with_exit_2(tmp_path):
  """The flags are refused while they are parsed: the config file need not
  name data that exists, nor --workdir a trained run."""
  config = write_config(tmp_path, str(tmp_path / 'data'))
  workdir = str(tmp_path / 'run')
  # A real process: the usage error ends it with status 2 (os._exit) before TensorFlow.
  the_error(
    pga('train', f'--config={tmp_path}/missing.py', f'--workdir={tmp_path}/w'),
    2,
    f'--config={tmp_path}/missing.py',
    'no such file',
  )
  error = the_error(
    in_process('train', f'--config={config}', f'--workdir={tmp_path}/w', '--config.latnet_dim=3'),
    2,
    '--config.latnet_dim',
    'did you mean --config.latent_dim?',
  )
  assert error.startswith('pga: error: --config.latnet_dim')  # the problem first
  the_error(
    in_process('train', f'--config={config}', f'--workdir={tmp_path}/w', '--config.latent_dim=0'),
    2,
    'config.latent_dim: must be an integer >= 1, got 0',
  )
  the_error(
    in_process('sample', f'--workdir={workdir}', '--num=abc', f'--out={tmp_path}/s.png'),
    2,
    '--num=abc',
  )
  the_error(
    in_process('sample', f'--workdir={workdir}', f'--out={tmp_path}/s.png', 'extra'),
    2,
    "unexpected argument 'extra'",
  )
  assert not os.path.exists(f'{tmp_path}/w')


def test_counts_of_zero_or_less_are_refused_before_anything_is_written(run, tmp_path):
  _, workdir, _ = run
  for command, flag in (
    ('sample', '--num=0'),
    ('reconstruct', '--num=-3'),
    ('interpolate', '--num=0'),
    ('interpolate', '--steps=1'),
  ):
    out = tmp_path / f'{command}.png'
    proc = in_process(command, f'--workdir={workdir}', flag, f'--out={out}')
    the_error(proc, 2, flag.split('=')[0], 'must be >=')
    assert not out.exists(), command


@pytest.mark.slow
def test_a_mistyped_split_and_an_unwritable_out_are_one_line(run, tmp_path):
  _, workdir, _ = run
  the_error(
    in_process(
      'reconstruct', f'--workdir={workdir}', '--num=3', '--split=tset', f'--out={tmp_path}/r.png'
    ),
    2,
    "unknown split 'tset'",
    "'test', 'train'",
  )
  blocked = tmp_path / 'blocked'
  blocked.mkdir()
  with read_only(str(blocked)):
    the_error(
      in_process('sample', f'--workdir={workdir}', '--num=4', f'--out={blocked}/s.png'),
      2,
      f'--out={blocked}/s.png',
      'cannot write to its folder',
    )
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  the_error(
    in_process('interpolate', f'--workdir={workdir}', '--num=2', f'--out={a_file}/i.png'),
    2,
    f'--out={a_file}/i.png',
    'cannot write to its folder',
  )
  # More images than the split holds (24 test images): named, not a crash.
  the_error(
    in_process('interpolate', f'--workdir={workdir}', '--num=20', f'--out={tmp_path}/i.png'),
    2,
    'needs 40 images',
    'has 24',
  )


@pytest.mark.slow
def test_evaluate_into_a_read_only_workdir_fails_before_the_work(run, tmp_path):
  _, workdir, _ = run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  before = sorted(os.listdir(copy))
  with read_only(copy):
    proc = pga(
      'evaluate',
      f'--workdir={copy}',
      '--num_samples=8',
      '--features=domain',
      f'--cache_dir={tmp_path}/cache',
      timeout=300,
    )
  the_error(proc, 2, copy, '--json=')
  assert proc.seconds < 120  # no classifier was trained first
  assert sorted(os.listdir(copy)) == before
  assert not os.path.exists(f'{tmp_path}/cache')


# 2. --config.method brings the method's reference settings, or names the fields.


@pytest.mark.slow
def test_overriding_the_method_brings_its_reference_settings(tmp_path):
  folder = tmp_path / 'images'
  folder.mkdir()
  for i, image in enumerate(helpers.synthetic_digits(24)):  # figures take 20
    Image.fromarray(image).save(folder / f'{i:02d}.png')
  (folder / 'notes.txt').write_text('not an image: the folder dataset reads png/jpg only')
  config = write_config(tmp_path, str(folder), dataset='folder')
  # The file sets init_steps=1 for LPGA: with VPGA it is the user's call, and named.
  the_error(
    in_process(
      'train', f'--config={config}', f'--workdir={tmp_path}/refused', '--config.method=vpga'
    ),
    2,
    'init_steps=1',
    'lpga: 3000, vpga: 0',
    '--config.init_steps=VALUE',
  )
  assert not os.path.exists(tmp_path / 'refused' / 'config.json')
  # The README's example (quickstart.py is LPGA's config) says so too.
  the_error(
    in_process(
      'train',
      '--config=experiments/configs/quickstart.py',
      f'--workdir={tmp_path}/qs',
      '--config.method=vpga',
      '--config.latent_dim=32',
    ),
    2,
    'init_steps=500',
    '--config.init_steps=VALUE',
  )

  workdir = str(tmp_path / 'vpga')
  proc = pga(
    'train',
    f'--config={config}',
    f'--workdir={workdir}',
    '--config.method=vpga',
    '--config.init_steps=0',
    '--config.num_steps=2',
    '--config.checkpoint_every=2',
  )
  assert proc.returncode == 0, proc.output[-3000:]
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  assert stored['method'] == 'vpga'
  # VPGA's reference coefficients, not LPGA's (nll 0.015, vrec = vkld = 0).
  assert (stored['latent_dim'], stored['nll'], stored['vrec'], stored['vkld']) == (
    32,
    0.0,
    0.01,
    0.02,
  )
  assert stored['init_steps'] == 0 and stored['optimizer']['name'] == 'sgd'
  assert 'vrec=' in proc.stderr and 'vkld=' in proc.stderr  # VPGA's own terms ran
  assert 'nll_enc=' not in proc.stderr
  assert 'pga: method vpga' in proc.stderr and 'Traceback' not in proc.output


# 4. Every directory a run writes is checked first; no hang on the way out.


@pytest.mark.slow
def test_unwritable_checkpoints_fail_before_the_first_step(run, tmp_path):
  config, workdir, _ = run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  checkpoints = os.path.join(copy, 'checkpoints')
  before = sorted(os.listdir(checkpoints))
  with read_only(checkpoints):
    proc = pga(
      'train', f'--config={config}', f'--workdir={copy}', '--config.num_steps=6', timeout=120
    )
  the_error(proc, 2, checkpoints, 'cannot write')
  assert ' finite=' not in proc.output  # no step ran
  assert sorted(os.listdir(checkpoints)) == before


@pytest.mark.slow
def test_a_full_disk_during_training_exits_1_at_once_with_the_detail_in_the_log(run, tmp_path):
  config, workdir, _ = run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  proc = pga(
    'train',
    f'--config={config}',
    f'--workdir={copy}',
    '--config.num_steps=6',
    wrapper=helpers.SMALL_DISK,
    timeout=200,
  )
  the_error(
    proc, 1, 'writing a checkpoint', 'File too large', 'the checkpoints already there are intact'
  )
  assert len(proc.output.splitlines()) < 20, proc.output[-3000:]
  with open(os.path.join(copy, 'pga.log')) as f:
    assert 'Traceback' in f.read()  # orbax's and TensorStore's detail, kept for inspection


# 5. The console shows the project's lines; the libraries' go to pga.log.


def test_training_console_is_the_projects_lines_and_the_log_has_the_rest(run):
  _, workdir, proc = run
  for noise in LIBRARY_NOISE:
    assert noise not in proc.output, noise
  assert 'Traceback' not in proc.output
  assert ' finite=' in proc.stderr and 'loss=' in proc.stderr  # per-term losses
  assert re.search(r'Step 3/3 \(100\.0%\), [0-9.]+ steps/s, ETA 0s', proc.stderr), proc.stderr
  assert 'pga: training finished at step 3.' in proc.stdout
  # Everything besides: the absl lines of the run's own modules.
  other = [
    line
    for line in proc.output.splitlines()
    if not line.startswith('pga: ')
    and not any(f' {m}.py:' in line for m in ('train', 'event_logs'))
  ]
  assert other == [], other
  with open(os.path.join(workdir, 'pga.log')) as f:
    log = f.read()
  assert '[Hyperparameters]' in log and 'orbax' in log


@pytest.mark.slow
def test_verbosity_brings_the_libraries_lines_back(run, tmp_path):
  _, workdir, _ = run
  quiet = pga('sample', f'--workdir={workdir}', '--num=4', f'--out={tmp_path}/q.png')
  loud = pga(
    'sample', f'--workdir={workdir}', '--num=4', f'--out={tmp_path}/l.png', '--verbosity=0'
  )
  assert quiet.returncode == loud.returncode == 0, loud.output[-3000:]
  assert quiet.output.strip().splitlines() == [f'pga: wrote {tmp_path}/q.png']
  assert 'checkpoint' in loud.stderr.lower() and len(loud.output.splitlines()) > 3


# 6. A dataset that must be downloaded, without network: at once.


@pytest.mark.slow
def test_mnist_without_network_fails_at_once(run, tmp_path):
  config, _, _ = run
  no_network = (
    'import socket, sys\n'
    'def refuse(*a, **k): raise OSError(101, "Network is unreachable")\n'
    'socket.create_connection = refuse\n'
    'from pga_jax import cli\n'
    'sys.argv = ["pga"] + sys.argv[1:]\n'
    'cli.run()\n'
  )
  start = time.time()
  proc = subprocess.run(
    [
      sys.executable,
      '-c',
      no_network,
      'train',
      f'--config={config}',
      f'--workdir={tmp_path}/w',
      '--config.dataset=mnist',
      f'--config.data_dir={tmp_path}/d',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=150,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0'),  # TensorFlow's native lines, all of them
  )
  proc.output = proc.stdout + proc.stderr
  the_error(proc, 2, "dataset 'mnist'", 'cannot reach its download server')
  assert time.time() - start < 90
  # TensorFlow, imported for the tfds dataset only, writes its start-up lines to pga.log.
  for noise in LIBRARY_NOISE:
    assert noise not in proc.output, noise
  with open(os.path.join(tmp_path, 'w', 'pga.log')) as f:
    assert 'absl::InitializeLog' in f.read()


# 7. The README says what the code does.


def test_readme_states_the_newcomer_facts():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  usage = readme.split('## Using it', 1)[1].split('```', 2)[1]
  assert 'pga train_classifier' in usage
  assert '.png, .jpg and .jpeg' in readme
  assert 'trains a classifier' in readme and '~/.cache/pga_jax/classifiers' in readme
  assert '--config.method=vpga --config.init_steps=0' in readme
  assert 'decoded points' in usage


def test_readme_and_docs_links_resolve():
  """Every relative link and image of README.md and docs/*.md names a file (and heading) that exists."""
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  def anchor(heading):  # GitHub's: lower case, punctuation dropped, spaces to hyphens
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')

  pages = [os.path.join(REPO, 'README.md')] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))
  assert len(pages) > 5
  broken, links = [], 0
  for page in pages:
    with open(page) as f:
      text = f.read()
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if '://' in target:
        continue
      links += 1
      path, _, fragment = target.partition('#')
      full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
      if not os.path.exists(full):
        broken.append(f'{os.path.relpath(page, REPO)}: {target}')
      elif fragment:
        with open(full) as f:
          headings = re.findall(r'^#+ (.*)$', f.read(), re.M)
        if fragment not in {anchor(h) for h in headings}:
          broken.append(f'{os.path.relpath(page, REPO)}: {target}')
  assert links > 50 and not broken, broken


def test_method_override_rules_on_the_reference_configs():
  """In-process companion of the CLI test: which fields follow the method, which are refused."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib, method_override  # pylint: disable=g-import-not-at-top

  def load(name):
    spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, 'experiments', 'configs', f'{name}.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()

  # mnist_lpga.py keeps every method field at LPGA's default: VAE's all come in.
  file_config, config = load('mnist_lpga'), load('mnist_lpga')
  config.method = 'vae'
  changed = method_override.apply(config, file_config, {'method': 'vae'})
  # The paper trains the VAE with SGD as every model: the optimizer does not change.
  assert (config.optimizer.name, config.optimizer.learning_rate) == ('sgd', 0.1)
  assert (config.beta, config.nll, config.zn_rec, config.init_steps) == (0.1, 0.0, 0.0, 0)
  assert config.latent_dim == 32 and set(changed) == {
    'latent_dim',
    'zn_rec',
    'nll',
    'beta',
    'init_steps',
  }
  config_lib.validate(config)
  # cifar10_lpga.py sets LPGA's own latent size and zn_rec: the VAE must not inherit them.
  file_config, config = load('cifar10_lpga'), load('cifar10_lpga')
  config.method = 'vae'
  with pytest.raises(
    config_lib.ConfigError,
    match=r'latent_dim=128 \(lpga: 12, vae: 32\); zn_rec=0\.03 \(lpga: 0\.06, vae: 0\.0\)',
  ):
    method_override.apply(config, file_config, {'method': 'vae'})
  # Given on the command line (with the file's latent_dim and zn_rec, also LPGA-specific),
  # they are the user's choice; the rest follows the VAE.
  config.optimizer.learning_rate = 1e-3
  method_override.apply(
    config,
    file_config,
    {'method': 'vae', 'optimizer.learning_rate': 1e-3, 'latent_dim': 128, 'zn_rec': 0.03},
  )
  assert (config.optimizer.name, config.optimizer.learning_rate) == ('sgd', 1e-3)
  assert (config.latent_dim, config.nll, config.beta) == (128, 0.0, 0.1)


def test_an_unknown_conv_forms_setting_is_one_line_before_anything_runs(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pga_jax.cli',
      'sample',
      f'--workdir={tmp_path}/none',
      f'--out={tmp_path}/s.png',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, PGA_JAX_CONV_FORMS='fastest'),
  )
  proc.output = proc.stdout + proc.stderr
  the_error(proc, 2, "PGA_JAX_CONV_FORMS='fastest'", "use 'first'")
  assert not os.path.exists(tmp_path / 'none')
