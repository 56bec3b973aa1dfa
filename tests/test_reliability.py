"""Reliability: preemption, non-finite steps, damaged checkpoints, bad input.

The faults are injected into real `pga train` processes: SIGTERM/SIGINT at
random points of a run, SIGKILL while a checkpoint is being written, a
truncated latest checkpoint, a loss term whose Eq. 6 log goes to -inf, a disk
that fills up during a checkpoint write. Bad data / config / workdirs /
Inception weights are `pga train` run in the pytest process
(tests/cli_inprocess.py): they fail before the first step, with a one-line
error and exit status 2. The interrupted run's end state is compared bitwise
with an uninterrupted run of the same config; the failed runs must leave what
was saved byte for byte as it was.

Random points: set PGA_FAULT_SEED to replay a failing draw (the seed is in
every assertion message).
"""

import fcntl
import glob
import hashlib
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from pga_jax import checkpointing, config as config_lib, data, methods, train, train_step as ts
from tests import cli_inprocess, helpers

NUM_STEPS = 14
RUN_TIMEOUT = 240  # seconds for any one `pga train` process
SEED = int(os.environ.get('PGA_FAULT_SEED', time.time_ns() % 2**32))


def config_text(data_dir: str) -> str:
  """The reference run's config file: LPGA on a folder of PNGs."""
  return helpers.config_file_text(
    data_dir,
    dataset='folder',
    image_size=28,
    channels=1,
    num_steps=NUM_STEPS,
    log_every=1,
    sample_every=1000,
    checkpoint_every=2,
    keep_checkpoints=2,
    max_bad_steps=3,
    # An inert fault term (coefficient 0: never computed); --config.fault=1 turns it on.
    extra_lines=(
      '  c.fault = 0.0\n'
      "  c.extra_terms = ({'name': 'collapse', 'fn': 'pga_jax.faults:collapsed_decoder_nll',\n"
      "                    'updates': 'decoder', 'coeff': 'fault'},)\n"
    ),
  )


# --------------------------------------------------------------------------
# Running `pga train` as a real process.
# --------------------------------------------------------------------------


def pga_command():
  script = os.path.join(os.path.dirname(sys.executable), 'pga')
  return [script] if os.path.exists(script) else [sys.executable, '-m', 'pga_jax.cli']


class PgaProcess:
  """A `pga` subprocess whose output is collected line by line as it runs."""

  STEP_LINE = re.compile(r'\] \[(\d+)\] finite=')

  def __init__(self, args, cwd, wrapper=()):
    # The test session's XLA cache (tests/conftest.py) is inherited: a cache
    # hit is the same executable, so bitwise comparisons are unaffected.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
    self.args = args
    self.proc = subprocess.Popen(
      list(wrapper) + pga_command() + list(args),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
      cwd=str(cwd),
      start_new_session=True,
    )
    self.out, self.err = [], []
    self.last_step = 0
    self._readers = [
      threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
      threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
    ]
    for reader in self._readers:
      reader.start()

  def _read(self, stream, lines):
    for line in stream:
      lines.append(line)
      match = self.STEP_LINE.search(line)
      if match:
        self.last_step = max(self.last_step, int(match.group(1)))

  def wait_until(self, predicate, timeout=RUN_TIMEOUT, poll=0.005):
    """Polls `predicate()` until true; fails if the process ends or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      result = predicate()
      if result:
        return result
      if self.proc.poll() is not None:
        self.finish()
        pytest.fail(
          f'pga exited ({self.proc.returncode}) before the fault could be injected '
          f'[PGA_FAULT_SEED={SEED}]\n{self.tail()}'
        )
      time.sleep(poll)
    self.kill()
    pytest.fail(f'timed out waiting to inject a fault [PGA_FAULT_SEED={SEED}]\n{self.tail()}')

  def send(self, signum):
    os.kill(self.proc.pid, signum)

  def finish(self, timeout=RUN_TIMEOUT):
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f'pga did not exit within {timeout}s\n{self.tail()}')
    for reader in self._readers:
      reader.join(timeout=10)
    return self.proc.returncode

  def kill(self):
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait(timeout=30)

  @property
  def stdout(self):
    return ''.join(self.out)

  @property
  def stderr(self):
    return ''.join(self.err)

  def tail(self, n=4000):
    return f'--- stdout\n{self.stdout[-n:]}\n--- stderr\n{self.stderr[-n:]}'


def run_pga(args, cwd, timeout=RUN_TIMEOUT):
  process = PgaProcess(args, cwd)
  try:
    process.finish(timeout)
  finally:
    process.kill()
  return process


def checkpoint_steps(workdir):
  folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def tmp_checkpoint_dirs(workdir):
  return glob.glob(os.path.join(workdir, checkpointing.CHECKPOINT_DIR, '*.orbax-checkpoint-tmp*'))


def params_at(workdir, step=None):
  _, _, params, restored_step = checkpointing.load_trained(workdir, step)
  return restored_step, [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def assert_bitwise_equal(a, b, what):
  assert len(a) == len(b)
  for i, (x, y) in enumerate(zip(a, b)):
    assert x.dtype == y.dtype and x.shape == y.shape, what
    assert np.array_equal(x, y), f'{what}: leaf {i} differs [PGA_FAULT_SEED={SEED}]'


def tree_manifest(folder):
  """{relative path: sha256} of every file under `folder` (to prove nothing changed).

  Leaves out the workdir's pga.log, which records every run, failed ones included.
  """
  manifest = {}
  for root, _, files in os.walk(folder):
    for name in files:
      if name == 'pga.log':
        continue
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        manifest[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return manifest


def write_pngs(folder, images, mode='L'):
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    if mode == 'RGB':
      image = np.repeat(image[..., None], 3, axis=-1)
    Image.fromarray(image, mode=mode).save(os.path.join(folder, f'{i:03d}.png'))


def the_error_line(process, traceback_allowed=False):
  """The single 'pga: error: ...' line of a failed run (and no traceback of ours)."""
  assert traceback_allowed or 'Traceback' not in process.stderr, process.tail()
  lines = [l for l in process.stderr.splitlines() if l.startswith('pga: error:')]
  assert len(lines) == 1, process.tail()
  line = lines[0]
  # One line: nothing of the message continues on the following lines.
  following = process.stderr.split(line, 1)[1].strip()
  assert following == '', process.tail()
  return line


# --------------------------------------------------------------------------
# The reference run: one uninterrupted `pga train`, shared by the tests (and by
# pytest-xdist workers, through a lock file).
# --------------------------------------------------------------------------


def source_digest():
  """sha256 of the package's sources: runs are only comparable under the same code."""
  package = os.path.dirname(checkpointing.__file__)
  digest = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(package, '**', '*.py'), recursive=True)):
    with open(path, 'rb') as f:
      digest.update(path.encode() + f.read())
  return digest.hexdigest()


class Reference:
  def __init__(self, root):
    self.root = str(root)
    self.source_file = os.path.join(self.root, 'source_digest')
    self.images = os.path.join(self.root, 'images')
    self.config = os.path.join(self.root, 'config.py')
    self.workdir = os.path.join(self.root, 'reference')


@pytest.fixture(scope='session')
def reference(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent  # shared by the workers of this session
  ref = Reference(base / 'reliability_reference')
  with open(base / 'reliability_reference.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = os.path.join(ref.root, 'done')
    if not os.path.exists(done):
      sources = source_digest()
      shutil.rmtree(ref.root, ignore_errors=True)
      os.makedirs(ref.root)
      write_pngs(ref.images, helpers.synthetic_digits(48))
      with open(ref.config, 'w') as f:
        f.write(config_text(ref.images))
      run = run_pga(['train', f'--config={ref.config}', f'--workdir={ref.workdir}'], ref.root)
      assert run.proc.returncode == 0, run.tail()
      assert f'training finished at step {NUM_STEPS}' in run.stdout, run.tail()
      with open(ref.source_file, 'w') as f:
        f.write(sources)
      with open(done, 'w') as f:
        f.write('ok')
  return ref


def copy_run(src, dst):
  """A copy of a run directory (config and checkpoints; figures and logs are not needed)."""
  os.makedirs(dst)
  shutil.copy(os.path.join(src, checkpointing.CONFIG_FILE), dst)
  shutil.copytree(
    os.path.join(src, checkpointing.CHECKPOINT_DIR), os.path.join(dst, checkpointing.CHECKPOINT_DIR)
  )
  return dst


def stop_by_signal(run, signum, target, seed_note):
  """Sends `signum` to `run` once it reaches step `target`: the run must finish the
  step, checkpoint, say so and exit 0. Returns the step it says it stopped at."""
  run.wait_until(lambda: run.last_step >= target)
  run.send(signum)
  assert run.finish() == 0, f'{seed_note}\n{run.tail()}'
  assert f'signal {int(signum)} received' in run.stderr, run.tail()
  stopped = re.search(r'training stopped early .* at step (\d+)', run.stdout)
  assert stopped, f'{seed_note}\n{run.tail()}'
  return int(stopped.group(1))


def largest_file(step_dir):
  files = [
    p for p in glob.glob(os.path.join(step_dir, '**', '*'), recursive=True) if os.path.isfile(p)
  ]
  return max(files, key=os.path.getsize)


# --------------------------------------------------------------------------
# 1 + 3. Preemption, kills during checkpoint writes, a truncated checkpoint.
# --------------------------------------------------------------------------


def test_preempted_killed_and_corrupted_run_resumes_to_the_uninterrupted_parameters(
  reference, tmp_path
):
  """One run's life under faults, each on a real `pga train` process:

  A. SIGTERM at a random step: finishes the step, checkpoints, says so, exits 0.
  B. resumed, then SIGKILL while a checkpoint is being written.
  C. resumed (the half-written checkpoint is ignored and cleaned up), then
     SIGINT at a random later step: same as A.
  D. the latest checkpoint is truncated; resumed: the damage is detected, the
     checkpoint moved aside with a warning, the run resumes from the one before.
  The final parameters equal the uninterrupted run's, bit for bit.
  """
  rng = random.Random(SEED)
  workdir = str(tmp_path / 'run')
  args = ['train', f'--config={reference.config}', f'--workdir={workdir}']
  seed_note = f'[PGA_FAULT_SEED={SEED}]'

  # A. SIGTERM once the run is stepping.
  target = rng.randint(1, 4)
  run = PgaProcess(args, tmp_path)
  try:
    stopped_at = stop_by_signal(run, signal.SIGTERM, target, seed_note)
  finally:
    run.kill()
  assert target <= stopped_at < NUM_STEPS, seed_note
  assert checkpoint_steps(workdir)[-1] == stopped_at, seed_note

  # B. SIGKILL in the middle of a checkpoint write (orbax's temporary directory
  # exists). Retried if the write happened to complete before the kill landed.
  for _ in range(3):
    run = PgaProcess(args, tmp_path)
    try:
      run.wait_until(lambda: run.last_step > stopped_at and tmp_checkpoint_dirs(workdir))
      time.sleep(rng.uniform(0.0, 0.01))
      run.send(signal.SIGKILL)
      assert run.finish() == -signal.SIGKILL
    finally:
      run.kill()
    if tmp_checkpoint_dirs(workdir):
      break
  assert tmp_checkpoint_dirs(workdir), f'no kill landed inside a checkpoint write {seed_note}'
  killed_at = run.last_step
  finalized = checkpoint_steps(workdir)
  assert finalized and finalized[-1] <= killed_at, seed_note

  # C. Resume (from the last complete checkpoint), then SIGINT at a random later step.
  run = PgaProcess(args, tmp_path)
  try:
    resumed = run.wait_until(lambda: re.search(r'Resumed from step (\d+)', run.stderr))
    resumed_at = int(resumed.group(1))
    assert resumed_at == finalized[-1], f'{seed_note}\n{run.tail()}'
    target = rng.randint(resumed_at + 1, max(resumed_at + 1, NUM_STEPS - 3))
    stopped_at = stop_by_signal(run, signal.SIGINT, target, seed_note)
  finally:
    run.kill()
  assert stopped_at < NUM_STEPS, seed_note
  steps = checkpoint_steps(workdir)
  assert steps[-1] == stopped_at and len(steps) == 2, (steps, seed_note)
  assert not tmp_checkpoint_dirs(workdir), 'the killed write was not cleaned up'

  # D. Truncate the latest checkpoint's largest file; the resumed run falls back.
  damaged, previous = steps[-1], steps[-2]
  victim = largest_file(os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(damaged)))
  os.truncate(victim, os.path.getsize(victim) // 2)
  run = run_pga(args, tmp_path)
  assert run.proc.returncode == 0, f'{seed_note}\n{run.tail()}'
  assert f'training finished at step {NUM_STEPS}' in run.stdout, run.tail()
  assert re.search(
    rf'Checkpoint\(s\) {damaged} could not be read .* resuming from step '
    rf'{previous} instead',
    run.stderr,
  ), run.tail()
  quarantined = os.listdir(os.path.join(workdir, checkpointing.QUARANTINE_DIR))
  assert [n.split('-')[0] for n in quarantined] == [str(damaged)], quarantined

  final_step, final = params_at(workdir)
  ref_step, expected = params_at(reference.workdir)
  assert final_step == ref_step == NUM_STEPS
  assert_bitwise_equal(final, expected, 'resumed run vs uninterrupted run')


# --------------------------------------------------------------------------
# 2. Non-finite steps.
# --------------------------------------------------------------------------


def test_collapsed_h_stops_the_run_naming_the_term_and_keeps_the_last_good_checkpoint(
  reference, tmp_path
):
  """Resume the finished reference run with its fault term on: Eq. 6 evaluated
  with a collapsed decoder gives log(0) = -inf and NaN gradients at every step."""
  workdir = copy_run(reference.workdir, str(tmp_path / 'run'))
  before = tree_manifest(os.path.join(workdir, checkpointing.CHECKPOINT_DIR))
  run = run_pga(
    [
      'train',
      f'--config={reference.config}',
      f'--workdir={workdir}',
      '--config.fault=1.0',
      f'--config.num_steps={NUM_STEPS + 10}',
    ],
    tmp_path,
  )
  assert run.proc.returncode == 1, run.tail()  # a failure during the work
  line = the_error_line(run)
  assert f'3 consecutive steps up to step {NUM_STEPS + 3} had non-finite values' in line
  assert '(in: collapse, grad_norm, loss)' in line  # nll_dec, rec, ... stayed finite
  assert 'latest checkpoint is the last good state' in line and 'Lower the learning rate' in line
  # Step NUM_STEPS + 2 was due for a checkpoint inside the streak: deferred.
  assert f'Step {NUM_STEPS + 2}: not checkpointing' in run.stderr
  # The last good checkpoint is still the latest and was not touched.
  assert checkpoint_steps(workdir)[-1] == NUM_STEPS
  assert tree_manifest(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)) == before


@pytest.fixture(scope='module')
def lpga_step():
  """A jitted LPGA train step of the tiny model, with its initial state."""
  config = config_lib.base_config('lpga')
  config.latent_dim = 4
  config.init_steps = 0
  loss_fn, model, _ = methods.make_loss_fn(config, channels=1)
  optimizer = ts.make_optimizer(config)
  state = ts.init_train_state(model, optimizer, jax.random.PRNGKey(0))
  # Past the warm-up: the terms are on from step init_steps + 1 (the reference's switch).
  state = state._replace(step=jnp.asarray(1, jnp.int32))
  images = jnp.asarray(data.scale_images(helpers.synthetic_digits(4)[..., None]))
  return jax.jit(ts.make_train_step(loss_fn, optimizer)), state, images


def assert_not_applied(old, new):
  assert int(new.step) == int(old.step) + 1
  for a, b in zip(
    jax.tree_util.tree_leaves((old.params, old.opt_state)),
    jax.tree_util.tree_leaves((new.params, new.opt_state)),
  ):
    np.testing.assert_array_equal(a, b)


def test_non_finite_steps_are_not_applied(lpga_step):
  step_fn, state, images = lpga_step
  new_state, metrics = step_fn(state, images)
  assert float(metrics['finite']) == 1.0  # the healthy step is applied
  leaves = jax.tree_util.tree_leaves
  assert any(
    not np.array_equal(a, b) for a, b in zip(leaves(state.params), leaves(new_state.params))
  )

  # h collapses: zero decoder, so h(z + eps) - h(z) = 0 and Eq. 6's log is -inf.
  collapsed = state._replace(
    params={
      'encoder': state.params['encoder'],
      'decoder': jax.tree_util.tree_map(jnp.zeros_like, state.params['decoder']),
    }
  )
  new_state, metrics = step_fn(collapsed, images)
  metrics = jax.device_get(metrics)
  assert metrics['nll_dec'] == -np.inf and metrics['finite'] == 0.0
  assert not np.isfinite(metrics['loss'])
  assert_not_applied(collapsed, new_state)
  monitor = train.BadStepMonitor(limit=1)
  with pytest.raises(train.NonFiniteError, match=r'in: grad_norm, loss, nll_dec\)'):
    monitor.update([metrics], first_step=0)

  # A NaN and an Inf pixel in the batch.
  for bad in (np.nan, np.inf):
    new_state, metrics = step_fn(state, images.at[0, 3, 3, 0].set(bad))
    assert float(metrics['finite']) == 0.0 and not np.isfinite(float(metrics['rec']))
    assert_not_applied(state, new_state)


@jax.custom_vjp
def _nan_gradient(x):
  return x


_nan_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.full_like(g, jnp.nan),))


def test_a_step_with_finite_loss_but_non_finite_gradients_is_not_applied():
  def loss_fn(params, images, rng, step):
    del rng, step
    loss = jnp.mean((params['w'] * images) ** 2) + 0.0 * _nan_gradient(params['v'])
    return loss, {'loss': loss}

  optimizer = optax.sgd(0.1, momentum=0.9)
  params = {'w': jnp.ones(3), 'v': jnp.ones(())}
  state = ts.TrainState(
    jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(0)
  )
  new_state, metrics = jax.jit(ts.make_train_step(loss_fn, optimizer))(state, jnp.ones(3))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['finite']) == 0.0
  assert_not_applied(state, new_state)
  with pytest.raises(train.NonFiniteError, match=r'in: grad_norm\)'):
    train.BadStepMonitor(limit=1).update([jax.device_get(metrics)], first_step=0)


def test_bad_step_monitor_counts_consecutive_steps_only():
  good, bad = {'finite': 1.0, 'loss': 1.0}, {'finite': 0.0, 'loss': np.nan, 'x': np.inf}
  monitor = train.BadStepMonitor(limit=3)
  monitor.update([bad, bad, good, bad, bad], first_step=0)  # never 3 in a row
  assert monitor.streak == 2
  with pytest.raises(train.NonFiniteError, match=r'3 consecutive steps up to step 6 .*in: loss, x'):
    monitor.update([bad], first_step=5)
  train.BadStepMonitor(limit=0).update([bad] * 100, first_step=0)  # 0: never stops


# --------------------------------------------------------------------------
# 3. Damaged checkpoints, in process.
# --------------------------------------------------------------------------


def flip_a_byte_orbax_reads_silently(workdir, step):
  """Flips one byte of checkpoint `step`'s largest file where orbax, which keeps
  no checksum, still reads the checkpoint without an error; returns the file.

  Where a flip lands decides what orbax sees: in some places the read fails
  outright (TensorStore fails on the chunk), in others it
  decodes to other numbers without a word, which is what the digest must
  catch. The file's layout varies between runs of the same training (eight
  fixed positions read silently in many full runs and failed once), so
  positions are tried until one reads silently with other numbers.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = largest_file(os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(step)))
  size = os.path.getsize(path)
  target = restore_target(workdir)

  def read_raw():
    """The state's digest as orbax alone reads it, or None if the read fails."""
    manager = checkpointing.checkpoint_manager(workdir, 2)
    try:
      args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
      return checkpointing.state_digest(manager.restore(step, args=args)['state'])
    except Exception:  # pylint: disable=broad-except  (orbax/TensorStore raise many types)
      return None
    finally:
      manager.close()

  intact = read_raw()
  assert intact is not None, f'checkpoint {step} does not read before any flip'

  def flip(pos):  # its own inverse
    with open(path, 'r+b') as f:
      f.seek(pos)
      byte = f.read(1)[0]
      f.seek(pos)
      f.write(bytes([byte ^ 0x5A]))

  for pos in range(size // 17, size, max(size // 17, 1)):
    flip(pos)
    if read_raw() not in (None, intact):  # read without error, other numbers
      return path
    flip(pos)  # undo, try the next position
  pytest.fail(f'no position of {path} flips silently for orbax; every read failed or was unchanged')


def restore_target(workdir):
  config = checkpointing.load_config(workdir)
  _, model, _ = methods.make_loss_fn(config, 1)
  optimizer = ts.make_optimizer(config)
  return jax.eval_shape(lambda r: ts.init_train_state(model, optimizer, r), jax.random.PRNGKey(0))


def test_bit_flips_in_the_latest_checkpoint_are_detected_and_it_is_moved_aside(
  reference, tmp_path, caplog
):
  """Orbax alone would load these flipped bytes silently (no checksum): the digest catches them."""
  workdir = copy_run(reference.workdir, str(tmp_path / 'run'))
  older, latest = checkpoint_steps(workdir)
  _, expected = params_at(workdir, older)
  step_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(latest))
  flip_a_byte_orbax_reads_silently(workdir, latest)

  # A reader (pga sample, ...) falls back but moves nothing.
  with pytest.raises(checkpointing.CorruptCheckpointError, match='do not match the checksum'):
    checkpointing.load_trained(workdir, latest)
  assert params_at(workdir)[0] == older and os.path.isdir(step_dir)

  # The trainer's restore moves the damaged step aside, so it stops being "latest".
  manager = checkpointing.checkpoint_manager(workdir, 2)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    state, step = checkpointing.restore_latest_good(manager, restore_target(workdir), workdir)
  warnings = [r.getMessage() for r in caplog.records]
  assert step == older and manager.latest_step() == older
  assert_bitwise_equal(
    [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)], expected, 'fallback state'
  )
  assert any(f'Checkpoint(s) {latest} could not be read' in w for w in warnings), warnings
  moved = glob.glob(os.path.join(workdir, checkpointing.QUARANTINE_DIR, f'{latest}-*'))
  assert len(moved) == 1 and not os.path.exists(step_dir)
  assert os.path.isdir(os.path.join(moved[0], 'state'))  # kept for inspection, not deleted


def test_when_no_checkpoint_can_be_read_nothing_is_moved_and_the_error_says_what_to_do(
  reference, tmp_path
):
  workdir = copy_run(reference.workdir, str(tmp_path / 'run'))
  for step in checkpoint_steps(workdir):
    os.remove(
      os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(step), 'state', 'manifest.ocdbt')
    )
  before = tree_manifest(workdir)
  manager = checkpointing.checkpoint_manager(workdir, 2)
  with pytest.raises(
    checkpointing.WorkdirError, match='can be read .*Nothing was changed.* move .* aside'
  ):
    checkpointing.restore_latest_good(manager, restore_target(workdir), workdir)
  assert tree_manifest(workdir) == before


def test_a_damaged_run_config_is_a_clear_error(tmp_path):
  (tmp_path / checkpointing.CONFIG_FILE).write_text('{"method": "lpga", "latent')
  with pytest.raises(
    checkpointing.WorkdirError,
    match=r'cannot read the run config .*'
    r'JSONDecodeError.*restore it from a copy',
  ):
    checkpointing.load_config(str(tmp_path))


# --------------------------------------------------------------------------
# 4. Bad input: one-line errors, exit 2, nothing saved touched.
# --------------------------------------------------------------------------


def test_bad_input_gives_one_line_errors_and_touches_nothing(reference, tmp_path):
  """Each bad input is `pga train` in this process; most point at the finished
  reference run, whose files must not change. The full disk is a `pga train`
  process (its file size limit), run meanwhile."""
  empty = tmp_path / 'empty'
  empty.mkdir()
  with_junk = str(tmp_path / 'junk')
  write_pngs(with_junk, helpers.synthetic_digits(16))
  with open(os.path.join(with_junk, 'notes.png'), 'w') as f:
    f.write('not an image')
  rgb = str(tmp_path / 'rgb')
  write_pngs(rgb, helpers.synthetic_digits(16), mode='RGB')
  not_a_dir = tmp_path / 'a_file'
  not_a_dir.write_text('x')

  saved = reference.workdir
  before = tree_manifest(saved)
  base = ['train', f'--config={reference.config}']
  cases = {
    'empty folder': (
      base + [f'--workdir={saved}', f'--config.data_dir={empty}'],
      ['no files in', str(empty), 'Put png/jpg images there'],
    ),
    'non-image file': (
      base + [f'--workdir={saved}', f'--config.data_dir={with_junk}'],
      ['cannot read', 'notes.png', 'skip_bad_files=True'],
    ),
    'wrong channels': (
      base + [f'--workdir={saved}', f'--config.data_dir={rgb}'],
      ['has 3 channel(s)', 'the channels option is 1', 'Set channels'],
    ),
    'config vs checkpoint': (
      base + [f'--workdir={saved}', '--config.latent_dim=5', '--config.use_bn=True'],
      [
        'another config',
        'latent_dim: stored 12, given 5',
        'use_bn: stored False, given True',
        'Use a new --workdir',
      ],
    ),
    'unwritable workdir': (
      base + [f'--workdir={not_a_dir}/run'],
      ['cannot write to workdir', 'Not a directory', 'choose a --workdir you can write to'],
    ),
    'too few images': (
      base
      + [
        f'--workdir={tmp_path}/fresh',
        f'--config.data_dir={rgb}',
        '--config.channels=3',
        '--config.batch_size=32',
      ],
      [
        'config.batch_size: 32 is larger than the 16 training images',
        'lower batch_size or add images',
      ],
    ),
    'missing Inception weights': (
      base
      + [
        f'--workdir={saved}',
        '--config.eval_every=5',
        '--config.eval_features=inception',
        f'--config.eval_inception_weights={tmp_path}/missing.npz',
      ],
      ['FID Inception weights not found', f'{tmp_path}/missing.npz', 'convert_inception'],
    ),
  }

  # The disk fills up (helpers.SMALL_DISK): the next checkpoint write fails half-way.
  full = copy_run(saved, str(tmp_path / 'full'))
  full_before = tree_manifest(os.path.join(full, checkpointing.CHECKPOINT_DIR))

  disk_full = PgaProcess(
    base + [f'--workdir={full}', f'--config.num_steps={NUM_STEPS + 4}'],
    tmp_path,
    wrapper=helpers.SMALL_DISK,
  )
  try:
    for name, (args, expected) in cases.items():
      run = cli_inprocess.pga(*args, cwd=str(tmp_path))
      # Input errors exit 2.
      assert run.returncode == 2, f'{name}\n{run.tail()}'
      line = the_error_line(run)
      for text in expected:
        assert text in line, f'{name}: {text!r} not in {line!r}'
    disk_full.finish()
  finally:
    disk_full.kill()
  # The disk filling up during the work exits 1; orbax's traceback of the
  # failed write goes to the log file, not the console.
  assert disk_full.proc.returncode == 1, disk_full.tail()
  line = the_error_line(disk_full)
  for text in (
    'writing a checkpoint to',
    'File too large',
    'the checkpoints already there are intact',
    'Free disk space',
  ):
    assert text in line, f'disk full: {text!r} not in {line!r}'
  assert tree_manifest(saved) == before
  # The failed write left only its temporary directory; the checkpoints are intact.
  full_after = tree_manifest(os.path.join(full, checkpointing.CHECKPOINT_DIR))
  assert {k: v for k, v in full_after.items() if 'orbax-checkpoint-tmp' not in k} == full_before
  assert checkpoint_steps(full) == [NUM_STEPS - 2, NUM_STEPS] and tmp_checkpoint_dirs(full)


def test_unreadable_files_can_be_skipped_and_are_counted(tmp_path, caplog):
  folder = str(tmp_path / 'images')
  write_pngs(folder, helpers.synthetic_digits(16))
  for name, content in (('notes.jpg', b'text'), ('broken.png', b'\x89PNG\r\n\x1a\n trunc')):
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(content)
  config = config_lib.base_config('lpga')
  config.update(dataset='folder', data_dir=folder, image_size=28, channels=1, batch_size=8)
  with pytest.raises(train.data.DatasetError, match='skip_bad_files=True'):
    train.load_training_images(config)
  config.skip_bad_files = True
  with caplog.at_level(logging.WARNING):
    images = train.load_training_images(config)
  warnings = [r.getMessage() for r in caplog.records]
  assert images.shape == (16, 28, 28, 1)
  assert any('Skipped 2 unreadable files' in w for w in warnings), warnings


def test_missing_inception_weights_name_the_file_and_how_to_make_it(tmp_path):
  from pga_jax.evaluation import inception

  missing = str(tmp_path / 'nowhere' / 'fid_inception.npz')
  with pytest.raises(FileNotFoundError) as info:
    inception.load_inception(missing)
  message = str(info.value)
  assert missing in message and 'convert_inception' in message
