"""Data parallelism: many devices and many processes train exactly like one device.

The device count is fixed when JAX starts, so every run here is a fresh
process (tests/distributed_worker.py, or `pga train` itself), bounded by a
timeout and killed (with its process group) if it overruns or a check fails:

* 1 device (the reference, an independent computation) and 8 simulated CPU
  devices (XLA_FLAGS=--xla_force_host_platform_device_count=8) train the same
  K steps on the same global batch: same parameters to 1e-5 (relative).
* Checkpoints written on 8 devices restore bit-exactly on 1 and the other way
  round, and training continues from them as from the device count's own.
* The compiled 8-device train step: the batch arrives sharded, gradients and
  batch-norm statistics are all-reduced, nothing is gathered, nothing is
  computed for the whole batch on every device, no host transfers.
* `pga train` in 2 processes on 127.0.0.1 with 2 CPU devices each (gloo
  collectives, jax_num_cpu_devices), stopped by a SIGTERM to one process and
  resumed, ends with the single-device parameters; only process 0 writes the
  config, logs and figures.

All runs train VPGA with batch norm at learning rate 0.01 (see
`distributed_worker.DEFAULTS`: with LPGA's log-det term, or at the reference's
rate 0.1, float32 rounding noise grows ~1e3-1e4x within a few steps even on
one device; docs/scaling.md has the numbers). A persistent compilation cache
shared by the runs keeps the test to a few minutes.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import distributed_worker, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'distributed_worker.py')
K = 4  # steps compared after training
MORE = 2  # further steps after a checkpoint moved between device counts
RTOL = 1e-5  # relative error of the parameter vector
TIMEOUT = 600  # seconds for each group of processes; they are killed after it


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
  return tmp_path_factory.mktemp('distributed')


@pytest.fixture(scope='module')
def idx_dir(scratch):
  folder = str(scratch / 'idx')
  helpers.write_idx_images(folder, helpers.synthetic_digits(96))
  return folder


def child_env(devices: int = 1, **extra) -> dict:
  """A clean JAX environment: CPU only, `devices` simulated devices, and the test
  session's compile cache (tests/conftest.py; the entries are keyed by the
  device count and process layout, and a hit is the same executable)."""
  kept = ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')
  env = {
    k: v
    for k, v in os.environ.items()
    if k in kept or (k != 'XLA_FLAGS' and not k.startswith(('JAX_', 'TPU_', 'CLOUD_TPU')))
  }
  env.update(
    TF_CPP_MIN_LOG_LEVEL='3',
    CUDA_VISIBLE_DEVICES='',
    JAX_PLATFORMS='cpu',
    PYTHONPATH=REPO + os.pathsep + env.get('PYTHONPATH', ''),
  )
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env.update(extra)
  return env


def run_processes(commands, envs, log_dir, timeout=TIMEOUT, signal_when=None):
  """Runs the commands at once; returns their stdouts. Fails (after killing all) on error.

  signal_when: (i, text, signum): send `signum` to process i (only) once its
    stderr contains `text`.
  """
  os.makedirs(log_dir, exist_ok=True)
  procs, logs = [], []
  try:
    for i, (cmd, env) in enumerate(zip(commands, envs)):
      out = open(os.path.join(log_dir, f'{i}.out'), 'w+')
      err = open(os.path.join(log_dir, f'{i}.err'), 'w+')
      logs.append((out, err))
      procs.append(
        subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
      )
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      if failed or time.monotonic() > deadline:
        break
      if signal_when is not None:
        i, text, signum = signal_when
        with open(logs[i][1].name) as f:
          if text in f.read() and procs[i].poll() is None:
            procs[i].send_signal(signum)
            signal_when = None
      time.sleep(0.05)
    texts = []
    for out, err in logs:
      out.seek(0)
      err.seek(0)
      texts.append((out.read(), err.read()))
    for i, p in enumerate(procs):
      if p.poll() != 0:
        state = 'timed out' if p.poll() is None else f'exit status {p.returncode}'
        pytest.fail(
          f'process {i} ({" ".join(commands[i][:4])} ...) {state}; stderr:\n{texts[i][1][-4000:]}'
        )
    return [t[0] for t in texts]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
      p.wait()
    for out, err in logs:
      out.close()
      err.close()


def worker(idx_dir, *jobs):
  return [sys.executable, WORKER, f'--idx_dir={idx_dir}'] + [json.dumps(j) for j in jobs]


def train_job(workdir, num_steps: int, out) -> dict:
  """Trains (or resumes) `workdir` to `num_steps` steps; the parameters go to `out`."""
  return {'mode': 'train', 'workdir': str(workdir), 'num_steps': num_steps, 'out': str(out)}


def restore_and_continue(workdir, restored, continued) -> list:
  """Restores `workdir`'s K-step checkpoint (parameters to `restored`), then trains it
  on to K + MORE steps (parameters to `continued`)."""
  return [
    {'mode': 'restore', 'workdir': str(workdir), 'out': str(restored)},
    train_job(workdir, K + MORE, continued),
  ]


def results(stdout: str) -> list:
  return [
    json.loads(line[len('RESULT=') :]) for line in stdout.splitlines() if line.startswith('RESULT=')
  ]


def load(path) -> dict:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def relative_error(actual: dict, expected: dict) -> float:
  """||actual - expected|| / ||expected|| over the whole parameter vector."""
  assert sorted(actual) == sorted(expected)
  diff = sum(float(np.sum((actual[k].astype(np.float64) - expected[k]) ** 2)) for k in expected)
  norm = sum(float(np.sum(expected[k].astype(np.float64) ** 2)) for k in expected)
  return (diff / norm) ** 0.5


def assert_close_params(actual: dict, expected: dict, what: str) -> float:
  error = relative_error(actual, expected)
  worst = max(expected, key=lambda k: np.linalg.norm(actual[k] - expected[k]))
  assert error <= RTOL, (
    f'{what}: relative parameter error {error:.2e} > {RTOL:g} (largest difference in {worst})'
  )
  return error


def assert_identical_params(actual: dict, expected: dict, what: str) -> None:
  assert sorted(actual) == sorted(expected), what
  for k in expected:
    np.testing.assert_array_equal(actual[k], expected[k], err_msg=f'{what}: {k}')


@pytest.fixture(scope='module')
def reference(scratch, idx_dir):
  """One device: K steps, then MORE steps from the K-step checkpoint."""
  d = scratch / 'ref'
  (stdout,) = run_processes(
    [
      worker(
        idx_dir,
        train_job(d / 'w1', K, d / 'p1_k.npz'),
        {'mode': 'copy', 'src': str(d / 'w1'), 'dst': str(d / 'w1_for_8')},
        train_job(d / 'w1', K + MORE, d / 'p1_more.npz'),
      )
    ],
    [child_env(1)],
    str(d / 'logs'),
  )
  runs = results(stdout)
  assert [r['step'] for r in runs if r['mode'] == 'train'] == [K, K + MORE]
  assert all(r['device_count'] == 1 for r in runs)
  return dict(
    dir=d,
    runs=runs,
    params_k=load(d / 'p1_k.npz'),
    params_more=load(d / 'p1_more.npz'),
    checkpoint=str(d / 'w1_for_8'),
  )


def hlo_findings(text: str, global_batch: int, devices: int) -> dict:
  entry = text[text.index('\nENTRY') :]
  params = re.findall(r'\bparameter\(\d+\)', entry)
  header = text.splitlines()[0]  # HloModule ..., input_output_alias={ {0}: (0, {}, may-alias), ...
  return {
    'all_reduce': len(re.findall(r'\ball-reduce(?:-start)?\(', text)),
    # batch-norm statistics and loss means (forward), gradients (transpose).
    'bn_all_reduce': len(re.findall(r'all-reduce(?:-start)?\(.*op_name="[^"]*/bn_[^"]*"', text)),
    'grad_all_reduce': len(re.findall(r'all-reduce(?:-start)?\(.*op_name="[^"]*transpose\(', text)),
    'gather_or_shuffle': re.findall(
      r'\b(all-gather|all-to-all|collective-permute|reduce-scatter|ragged-all-to-all)'
      r'(?:-start)?\(',
      text,
    ),
    'host_transfer': re.findall(
      r'\b(send|recv|infeed|outfeed)(?:-done|-start)?\(|custom_call_target="[^"]*'
      r'(?:callback|host|Host)[^"]*"',
      text,
    ),
    # Any array of rank >= 2 whose leading dimension is the *global* batch.
    'whole_batch_arrays': sorted(
      set(re.findall(rf'\b[a-z]+\d*\[{global_batch},\d+(?:,\d+)*\]', text))
    ),
    'batch_parameter': re.findall(
      rf'f32\[{global_batch // devices},28,28,1\]\{{[^}}]*\}} parameter\(', entry
    ),
    'num_parameters': len(params),
    'aliased_outputs': len(re.findall(r'\(\d+, \{\}, (?:may|must)-alias\)', header)),
  }


def test_eight_devices_train_like_one_and_checkpoints_move_between_them(
  scratch, idx_dir, reference
):
  d = scratch / 'eight'
  w8, w8_for_1 = str(d / 'w8'), str(d / 'w8_for_1')
  # 8 devices: train; compile the step for the HLO checks; restore the
  # 1-device checkpoint and continue it.
  (stdout,) = run_processes(
    [
      worker(
        idx_dir,
        train_job(w8, K, d / 'p8_k.npz'),
        {'mode': 'copy', 'src': w8, 'dst': w8_for_1},
        {'mode': 'hlo', 'out': str(d / 'step8.hlo')},
        *restore_and_continue(reference['checkpoint'], d / 'r1to8.npz', d / 'p1to8_more.npz'),
      )
    ],
    [child_env(8)],
    str(d / 'logs8'),
  )
  runs8 = results(stdout)
  assert all(r['device_count'] == 8 for r in runs8)
  assert [r['mesh_devices'] for r in runs8 if r['mode'] == 'train'] == [8, 8]
  # 1 device: restore the 8-device checkpoint and continue it.
  (stdout,) = run_processes(
    [worker(idx_dir, *restore_and_continue(w8_for_1, d / 'r8to1.npz', d / 'p8to1_more.npz'))],
    [child_env(1)],
    str(d / 'logs1'),
  )
  runs1 = results(stdout)
  assert all(r['device_count'] == 1 for r in runs1)

  # K steps on 8 devices == K steps on 1 device.
  p8 = load(d / 'p8_k.npz')
  assert_close_params(p8, reference['params_k'], f'{K} steps on 8 devices vs 1')
  loss1, loss8 = reference['runs'][0]['loss'], runs8[0]['loss']
  assert abs(loss8 - loss1) <= 1e-4 * abs(loss1), (loss8, loss1)
  # ... and 1e-5 is tight: two more steps move the parameters by > 10x that.
  assert relative_error(reference['params_more'], reference['params_k']) > 10 * RTOL

  # Checkpoints: bit-exact across device counts, replicated on all 8.
  restore8 = next(r for r in runs8 if r['mode'] == 'restore')
  assert restore8['step'] == K and restore8['replicated_on_all_devices']
  assert_identical_params(load(d / 'r1to8.npz'), reference['params_k'], '1-device ckpt on 8')
  assert runs1[0]['step'] == K
  assert_identical_params(load(d / 'r8to1.npz'), p8, '8-device ckpt on 1')
  # ... and training continues from them as on the device count that wrote them.
  assert [r['step'] for r in runs8 + runs1 if r['mode'] == 'train'] == [K, K + MORE, K + MORE]
  assert_close_params(
    load(d / 'p1to8_more.npz'),
    reference['params_more'],
    'resumed on 8 devices from a 1-device checkpoint',
  )
  assert_close_params(
    load(d / 'p8to1_more.npz'),
    reference['params_more'],
    'resumed on 1 device from an 8-device checkpoint',
  )

  # The compiled 8-device step.
  hlo = next(r for r in runs8 if r['mode'] == 'hlo')
  found = hlo_findings((d / 'step8.hlo').read_text(), hlo['global_batch'], 8)
  assert found['batch_parameter'], 'the batch should arrive as 2 rows per device'
  assert found['bn_all_reduce'] > 0, 'batch-norm statistics must be all-reduced'
  assert found['grad_all_reduce'] > 0, 'gradients must be all-reduced'
  assert not found['gather_or_shuffle'], f'unexpected collectives {found["gather_or_shuffle"]}'
  assert not found['host_transfer'], f'host transfers {found["host_transfer"]}'
  assert not found['whole_batch_arrays'], (
    f'arrays of the whole batch on every device: {found["whole_batch_arrays"]}'
  )
  # The donated state is updated in place: every state leaf is aliased to an output.
  assert found['aliased_outputs'] == hlo['num_state_leaves'], found


def test_two_processes_with_two_devices_each_train_like_one_device(scratch, idx_dir, reference):
  d = scratch / 'two_processes'
  d.mkdir()
  workdir = str(d / 'run')
  config_file = d / 'config.py'
  config_file.write_text(
    'from tests import distributed_worker\n'
    f'def get_config():\n  return distributed_worker.test_config({idx_dir!r}, '
    f'num_steps={K})\n'
  )
  env = child_env(1, JAX_NUM_CPU_DEVICES='2', JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')

  def commands(*flags):
    address = f'127.0.0.1:{helpers.free_port()}'
    return [
      [
        sys.executable,
        '-m',
        'pga_jax.cli',
        'train',
        f'--config={config_file}',
        f'--workdir={workdir}',
        f'--coordinator_address={address}',
        '--num_processes=2',
        f'--process_id={i}',
        *flags,
      ]
      for i in range(2)
    ]

  # A stop signal (preemption) that reaches process 1 only, once training has
  # started: both processes stop after the same step and write one checkpoint.
  out0, out1 = run_processes(
    commands('--config.num_steps=50'),
    [env, env],
    str(d / 'stop'),
    signal_when=(1, 'Training from step', signal.SIGTERM),
  )
  stopped = re.search(
    r'training stopped early \(resume with the same command\) at step (\d+)', out0
  )
  assert stopped and int(stopped.group(1)) < K, out0
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [stopped.group(1)]

  # Both resume and finish the K steps.
  out0, out1 = run_processes(commands(), [env, env], str(d / 'logs'))

  # Process 0 reports, writes the config, TensorBoard logs and figures; process 1 nothing.
  assert f'training finished at step {K}' in out0
  assert 'pga:' not in out1
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  assert len(events) == 2, events  # one per run, from process 0
  figures = os.listdir(os.path.join(workdir, 'figures'))
  assert 'samples_latest.png' in figures and len(figures) == 6, figures
  log0 = (d / 'logs' / '0.err').read_text()
  assert 'process 0 of 2, 2 local / 4 global devices' in log0, log0[-2000:]

  # The checkpoint (one, written jointly by both processes) holds the 1-device result.
  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top

  config, _, params, step = checkpointing.load_trained(workdir)
  assert step == K and config.method == distributed_worker.DEFAULTS['method']
  import jax  # pylint: disable=g-import-not-at-top

  flat = {
    jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
  }
  assert_close_params(flat, reference['params_k'], f'{K} steps on 2 processes x 2 devices vs 1')
