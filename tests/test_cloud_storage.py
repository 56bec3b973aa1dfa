"""gs:// workdirs and data, against a real GCS emulator.

The emulator is fake-gcs-server (tests/gcs_emulator.py), started once per
test process on a free port of 127.0.0.1 with in-memory storage and always
stopped. The `pga` processes under test only get `STORAGE_EMULATOR_HOST`;
everything else follows from it (`pga_jax.storage.configure_environment`).

What the tests look at is independent of the code under test: objects in the
bucket are listed, read and damaged through the emulator's JSON API with
plain urllib, and the run's parameters are compared bit for bit with an
uninterrupted run in a local workdir.

The remote code runs in subprocesses only: fsspec reads its configuration
when first imported, and this pytest process must never look for Google
credentials or a metadata server.
"""

import http.server
import json
import os
import re
import signal
import sys
import threading

import numpy as np
import pytest

from pga_jax import storage
from tests import helpers
from tests.gcs_emulator import (
  create_bucket,
  get_object,
  list_objects,
  put_object,
  run_script,
  upload_folder,
)
from tests.test_reliability import PgaProcess, assert_bitwise_equal, the_error_line

BUCKET = 'pga-test'
NUM_STEPS = 20


def config_text(data_dir: str, num_steps: int = NUM_STEPS) -> str:
  """LPGA on IDX data in `data_dir` (local or gs://)."""
  return helpers.config_file_text(
    data_dir,
    num_steps=num_steps,
    log_every=1,
    sample_every=10,
    checkpoint_every=5,
    keep_checkpoints=2,
  )


# Run in a subprocess: the parameters of runs (local or gs://) as local .npz
# files, for pairs of arguments RUN_DIR OUT.npz.
PARAMS_SCRIPT = """
import sys
from pga_jax import storage
storage.configure_environment()
import jax, numpy as np
from pga_jax import checkpointing
for workdir, out in zip(sys.argv[1::2], sys.argv[2::2]):
  _, _, params, step = checkpointing.load_trained(workdir)
  leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]
  np.savez(out, step=step, **{f'leaf{i:04d}': x for i, x in enumerate(leaves)})
"""

# Run in a subprocess: several `pga` commands one after the other, each as a
# fresh process would see it (tests/cli_inprocess.py), in one process that
# starts Python, TensorFlow and JAX once. argv: OUT.json, then one JSON list
# of arguments per command; OUT.json gets each command's exit status and output.
COMMANDS_SCRIPT = """
import json, sys
from pga_jax import storage
storage.configure_environment()
from tests import cli_inprocess
results = []
for args in sys.argv[2:]:
  r = cli_inprocess.pga(*json.loads(args), cwd='.')
  results.append({'returncode': r.returncode, 'stdout': r.stdout, 'stderr': r.stderr})
with open(sys.argv[1], 'w') as f:
  json.dump(results, f)
"""


def emulated(url):
  """A PgaProcess wrapper that sets the one switch."""
  return ('env', f'STORAGE_EMULATOR_HOST={url}')


# A PgaProcess wrapper (after `emulated`): runs the `pga` command that follows
# it with gcsfs's back-off between retries set to zero; its six tries of a
# refused connection otherwise sleep ~35 s. The tries, and the error after the
# last, are gcsfs's own.
WITHOUT_RETRY_SLEEP = """
import sys, types
import gcsfs.retry
async def no_wait(seconds):
  del seconds
gcsfs.retry.asyncio = types.SimpleNamespace(sleep=no_wait)
command = sys.argv[1:]  # the pga script, or python -m pga_jax.cli; then its arguments
sys.argv = ['pga'] + command[3 if command[1:3] == ['-m', 'pga_jax.cli'] else 1:]
from pga_jax import cli
cli.run()
"""


def run_emulated(args, url, cwd, timeout=240):
  process = PgaProcess(args, cwd, wrapper=emulated(url))
  try:
    process.finish(timeout)
  finally:
    process.kill()
  return process


def params_of(pairs, url, cwd):
  """[(step, leaves)] of each (run directory, .npz path), read in one child process."""
  run_script(PARAMS_SCRIPT, *[str(x) for pair in pairs for x in pair], url=url, cwd=str(cwd))
  found = []
  for _, out in pairs:
    with np.load(out) as loaded:
      leaves = [loaded[k] for k in sorted(loaded.files) if k.startswith('leaf')]
      found.append((int(loaded['step']), leaves))
  return found


def pga_commands(commands, url, cwd, out):
  """Runs each list of `pga` arguments in turn in one emulated child process
  (working directory `cwd`); returns their results (dicts of returncode,
  stdout, stderr)."""
  run_script(
    COMMANDS_SCRIPT,
    str(out),
    *[json.dumps(args) for args in commands],
    url=url,
    cwd=str(cwd),
    timeout=600,
    PYTHONPATH=helpers.REPO,  # for `tests.cli_inprocess`
  )
  with open(out) as f:
    return json.load(f)


# --------------------------------------------------------------------------
# Fast: the settings derived from the one switch.
# --------------------------------------------------------------------------


def test_storage_emulator_host_is_the_one_switch():
  plain = storage.environment_settings({})
  assert plain == {
    'EPATH_USE_TF': 'false',
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'FSSPEC_GS_USE_LISTINGS_CACHE': 'false',
  }
  emulated_env = storage.environment_settings({'STORAGE_EMULATOR_HOST': '127.0.0.1:4443'})
  assert emulated_env['TENSORSTORE_GCS_HTTP_URL'] == 'http://127.0.0.1:4443'
  assert emulated_env['FSSPEC_GS_TOKEN'] == 'anon'
  assert emulated_env['GOOGLE_AUTH_TOKEN_FOR_TESTING']
  # What the user set explicitly stays.
  kept = storage.environment_settings(
    {
      'STORAGE_EMULATOR_HOST': 'http://h:1/',
      'TENSORSTORE_GCS_HTTP_URL': 'http://other:2',
      'EPATH_USE_TF': 'true',
    }
  )
  assert 'TENSORSTORE_GCS_HTTP_URL' not in kept and 'EPATH_USE_TF' not in kept
  environ = {'STORAGE_EMULATOR_HOST': 'http://h:1/'}
  storage.configure_environment(environ)
  assert environ['TENSORSTORE_GCS_HTTP_URL'] == 'http://h:1'


def event_tags(path):
  """{(step, tag)} of the summaries in a TensorBoard event file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top

  found = set()
  for raw in tf.data.TFRecordDataset(str(path)):
    event = event_pb2.Event.FromString(raw.numpy())
    found |= {(event.step, value.tag) for value in event.summary.value}
  return found


def test_event_files_are_uploaded_on_flush_and_close(tmp_path):
  """UploadingSummaryWriter against a local 'remote' directory (fsspec's local filesystem)."""
  from pga_jax import event_logs  # pylint: disable=g-import-not-at-top

  remote = tmp_path / 'remote'
  remote.mkdir()
  writer = event_logs.UploadingSummaryWriter(str(remote), upload_every=3600)
  writer.write_scalars(1, {'loss': 0.5})
  assert os.listdir(remote) == []  # not yet: uploads wait for a flush or the interval
  writer.flush()
  (name,) = os.listdir(remote)
  assert name.startswith('events.out.tfevents') and event_tags(remote / name) == {(1, 'loss')}
  writer.write_scalars(2, {'loss': 0.25})
  writer.close()
  assert os.listdir(remote) == [name]
  assert event_tags(remote / name) == {(1, 'loss'), (2, 'loss')}
  assert not os.path.exists(writer._local_dir)  # pylint: disable=protected-access
  (tmp_path / 'eager').mkdir()
  eager = event_logs.UploadingSummaryWriter(str(tmp_path / 'eager'), upload_every=0)
  eager.write_scalars(1, {'x': 1.0})
  assert len(os.listdir(tmp_path / 'eager')) == 1
  eager.close()


def test_paths_and_atomic_local_writes(tmp_path):
  assert storage.is_remote('gs://b/run') and not storage.is_remote('runs/gs')
  assert storage.join('gs://b/run/', 'checkpoints', '3') == 'gs://b/run/checkpoints/3'
  assert storage.absolute('gs://b/run') == 'gs://b/run'
  assert storage.dirname('gs://b/run/x.json') == 'gs://b/run'
  assert storage.bucket('gs://b/run/x') == 'b'
  path = str(tmp_path / 'sub' / 'x.json')
  storage.write_atomic(path, 'one')
  storage.write_atomic(path, b'two')
  assert open(path).read() == 'two' and os.listdir(tmp_path / 'sub') == ['x.json']


def test_the_json_writer_and_the_writability_probe_on_local_paths(tmp_path):
  path = str(tmp_path / 'new' / 'r.json')
  assert storage.write_json(path, {'b': np.float32(1.5), 'a': [1]}, indent=1) == path
  assert open(path).read() == '{\n "a": [\n  1\n ],\n "b": 1.5\n}\n'  # sorted, numpy as float
  assert os.listdir(tmp_path / 'new') == ['r.json']  # no temporary file left
  storage.check_writable(str(tmp_path / 'made'))
  assert os.listdir(tmp_path / 'made') == []  # created; the probe is gone
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  with pytest.raises(storage.StorageError) as err:
    storage.check_writable(str(a_file / 'run'))
  assert str(err.value) == (
    f"cannot write to workdir '{a_file}/run' (Not a directory); choose a --workdir you can write to"
  )
  with pytest.raises(storage.StorageError, match='its folder .*; choose a path you can write'):
    storage.check_writable(
      str(a_file / 'run'), what='its folder', fix='choose a path you can write to'
    )


# --------------------------------------------------------------------------
# Slow: a run's whole life in gs://.
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_train_stop_resume_sample_evaluate_in_gs_equal_a_local_run(emulator, tmp_path):
  """train 20 steps into gs:// with the data in gs://, SIGTERM half-way, resume;
  the parameters equal an uninterrupted local run's bit for bit; sample,
  evaluate; a damaged latest checkpoint and an unfinished one in the bucket."""
  url = emulator
  create_bucket(url, BUCKET)
  data = tmp_path / 'data'
  helpers.write_idx_images(str(data), helpers.synthetic_digits(64, seed=3), 'train')
  helpers.write_idx_images(str(data), helpers.synthetic_digits(24, seed=4), 't10k')
  upload_folder(url, BUCKET, 'data', str(data))
  remote_config = tmp_path / 'remote.py'
  remote_config.write_text(config_text(f'gs://{BUCKET}/data'))
  local_config = tmp_path / 'local.py'
  local_config.write_text(config_text(str(data)))
  workdir = f'gs://{BUCKET}/runs/lpga'
  args = ['train', f'--config={remote_config}', f'--workdir={workdir}']
  cwd = tmp_path / 'cwd'
  cwd.mkdir()

  # The uninterrupted local run, side by side with the first gs:// run.
  reference = PgaProcess(
    ['train', f'--config={local_config}', f'--workdir={tmp_path / "local_run"}'], tmp_path
  )
  run = PgaProcess(args, cwd, wrapper=emulated(url))
  try:
    run.wait_until(lambda: run.last_step >= NUM_STEPS // 2)
    run.send(signal.SIGTERM)
    assert run.finish() == 0, run.tail()
    assert reference.finish() == 0, reference.tail()
  finally:
    run.kill()
    reference.kill()
  stopped = re.search(r'training stopped early .* at step (\d+)', run.stdout)
  assert stopped, run.tail()
  stopped_at = int(stopped.group(1))
  assert NUM_STEPS // 2 <= stopped_at < NUM_STEPS
  objects = list_objects(url, BUCKET, 'runs/lpga/')
  assert f'runs/lpga/checkpoints/{stopped_at}/commit_success.txt' in objects, sorted(objects)
  assert 'runs/lpga/config.json' in objects
  assert json.loads(get_object(url, BUCKET, 'runs/lpga/config.json'))['num_steps'] == NUM_STEPS
  assert any('events.out.tfevents' in name and size > 0 for name, size in objects.items())
  assert objects.get('runs/lpga/figures/samples_00000010.png', 0) > 0
  assert os.listdir(cwd) == [], 'nothing may be written locally (e.g. a folder "gs:")'

  run = run_emulated(args, url, cwd)
  assert run.proc.returncode == 0, run.tail()
  assert f'Resumed from step {stopped_at}' in run.stderr, run.tail()
  assert f'training finished at step {NUM_STEPS}' in run.stdout, run.tail()
  (step, remote), (ref_step, local) = params_of(
    [(workdir, tmp_path / 'remote.npz'), (tmp_path / 'local_run', tmp_path / 'local.npz')],
    url,
    tmp_path,
  )
  assert step == ref_step == NUM_STEPS
  assert_bitwise_equal(remote, local, 'gs:// run stopped and resumed vs local run')
  objects = list_objects(url, BUCKET, 'runs/lpga/')
  steps = sorted(
    {
      int(n.split('/')[3])
      for n in objects
      if n.endswith('/commit_success.txt') and n.count('/') == 4
    }
  )
  assert steps == [NUM_STEPS - 5, NUM_STEPS], steps  # keep_checkpoints=2, older ones deleted
  events = sorted(n for n in objects if 'events.out.tfevents' in n)
  assert len(events) == 2  # one per process
  tags = set()
  for i, name in enumerate(events):
    (tmp_path / f'events{i}').write_bytes(get_object(url, BUCKET, name))
    tags |= event_tags(tmp_path / f'events{i}')
  assert {(stopped_at, 'loss'), (NUM_STEPS, 'loss'), (NUM_STEPS, 'samples')} <= tags

  # An unfinished write (no commit_success.txt) is not taken for a checkpoint.
  put_object(url, BUCKET, f'runs/lpga/checkpoints/{NUM_STEPS + 5}/state/_METADATA', b'{}')
  # sample (from gs:// and from the local run), reconstruct, interpolate and
  # evaluate, one after the other in one emulated process.
  sample_out = f'gs://{BUCKET}/out/samples.npz'
  commands = [
    ['sample', f'--workdir={workdir}', '--num=16', f'--out={sample_out}'],
    [
      'sample',
      f'--workdir={tmp_path / "local_run"}',
      '--num=16',
      f'--out={tmp_path / "local_samples.npz"}',
    ],
  ]
  for command in ('reconstruct', 'interpolate'):
    commands.append(
      [command, f'--workdir={workdir}', '--num=4', f'--out=gs://{BUCKET}/out/{command}.png']
    )
  commands.append(
    [
      'evaluate',
      f'--workdir={workdir}',
      '--num_samples=32',
      '--features=domain',
      f'--cache_dir={tmp_path / "eval_cache"}',
    ]
  )
  results = pga_commands(commands, url, cwd, tmp_path / 'commands.json')
  for command, result in zip(commands, results):
    assert result['returncode'] == 0, (command, result['stderr'][-3000:])
  put_bytes = get_object(url, BUCKET, 'out/samples.npz')
  (tmp_path / 'remote_samples.npz').write_bytes(put_bytes)
  with np.load(tmp_path / 'remote_samples.npz') as a, np.load(tmp_path / 'local_samples.npz') as b:
    assert a['images'].shape == (16, 28, 28, 1) and np.array_equal(a['images'], b['images'])
  for command in ('reconstruct', 'interpolate'):
    assert get_object(url, BUCKET, f'out/{command}.png')[:8] == b'\x89PNG\r\n\x1a\n'
  name = f'runs/lpga/eval/domain_step{NUM_STEPS}_n32.json'
  results = json.loads(get_object(url, BUCKET, name))
  assert results['step'] == NUM_STEPS and results['num_samples'] == 32
  assert results['workdir'] == workdir and np.isfinite(results['fid'])
  assert (
    len([n for n in list_objects(url, BUCKET, 'runs/lpga/') if 'events.out.tfevents' in n]) == 3
  )

  # The latest checkpoint damaged in the bucket: the run falls back to the one
  # before, moves the damaged one aside in gs:// and trains to the same end.
  latest = list_objects(url, BUCKET, f'runs/lpga/checkpoints/{NUM_STEPS}/state/')
  victim = max(latest, key=latest.get)
  content = get_object(url, BUCKET, victim)
  put_object(url, BUCKET, victim, content[: len(content) // 2])
  run = run_emulated(args, url, cwd)
  assert run.proc.returncode == 0, run.tail()
  assert re.search(
    rf'Checkpoint\(s\) {NUM_STEPS} could not be read .* resuming from step '
    rf'{NUM_STEPS - 5} instead',
    run.stderr,
  ), run.tail()
  moved = list_objects(url, BUCKET, 'runs/lpga/corrupt_checkpoints/')
  assert {n.split('/')[3].split('-')[0] for n in moved} == {str(NUM_STEPS)}, sorted(moved)
  assert any(n.endswith(victim.split(f'/{NUM_STEPS}/', 1)[1]) for n in moved)
  ((step, retrained),) = params_of([(workdir, tmp_path / 'retrained.npz')], url, tmp_path)
  assert step == NUM_STEPS
  assert_bitwise_equal(retrained, local, 'gs:// run after the fallback vs local run')
  assert os.listdir(cwd) == []


@pytest.mark.slow
def test_idx_and_folder_data_read_from_gs_equal_the_local_files(emulator, tmp_path):
  url = emulator
  create_bucket(url, BUCKET)
  idx_dir = tmp_path / 'idx'
  helpers.write_idx_images(str(idx_dir), helpers.synthetic_digits(10, seed=5), 'train')
  upload_folder(url, BUCKET, 'idx_data', str(idx_dir))
  folder = tmp_path / 'folder'
  from tests.test_reliability import write_pngs  # pylint: disable=g-import-not-at-top

  write_pngs(str(folder / 'train'), helpers.synthetic_digits(7, seed=6))
  upload_folder(url, BUCKET, 'png_data/train', str(folder / 'train'))
  put_object(url, BUCKET, 'png_data/train/.hidden/ignored.png', b'not an image')
  script = """
import sys
from pga_jax import storage
storage.configure_environment()
import numpy as np
from pga_jax import data
pairs = [('idx', sys.argv[1], 'gs://%(b)s/idx_data'), ('folder', sys.argv[2], 'gs://%(b)s/png_data')]
for name, local, remote in pairs:
  a = data.load_split(name, 'train', local, image_size=28, channels=1)
  b = data.load_split(name, 'train', remote, image_size=28, channels=1)
  assert a.images.shape[0] > 0 and np.array_equal(a.images, b.images), name
  assert (a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels), name
  print(name, a.images.shape)
try:
  data.load_split('idx', 'train', 'gs://%(b)s/missing', image_size=28, channels=1)
except data.DatasetError as err:
  print('error:', err)
""" % {'b': BUCKET}
  result = run_script(script, str(idx_dir), str(folder), url=url)
  assert 'idx (10, 28, 28, 1)' in result.stdout and 'folder (7, 28, 28, 1)' in result.stdout
  assert "error: dataset 'idx': data_dir 'gs://pga-test/missing' does not exist" in result.stdout


class _Forbidden(http.server.BaseHTTPRequestHandler):
  """A storage endpoint that refuses everything, as GCS does without permission."""

  def _refuse(self):
    body = json.dumps(
      {'error': {'code': 403, 'message': 'caller does not have storage.objects.create access'}}
    ).encode()
    self.send_response(403)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  do_GET = do_POST = do_PUT = do_DELETE = _refuse

  def log_message(self, *args):
    del args


@pytest.mark.slow
def test_a_bad_gs_workdir_is_one_line_before_training(emulator, tmp_path):
  """No such bucket, no permission, no network: exit 2, one line naming it, nothing written."""
  url = emulator
  create_bucket(url, BUCKET)
  data = tmp_path / 'data'
  helpers.write_idx_images(str(data), helpers.synthetic_digits(16), 'train')
  config = tmp_path / 'config.py'
  config.write_text(config_text(str(data), num_steps=4))
  forbidden = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Forbidden)
  threading.Thread(target=forbidden.serve_forever, daemon=True).start()
  closed_port = helpers.free_port()  # nothing listens there: no network
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  cases = {
    'no bucket': (url, 'gs://no-such-bucket/run', ["bucket 'no-such-bucket' does not exist"]),
    'no permission': (
      f'http://127.0.0.1:{forbidden.server_address[1]}',
      f'gs://{BUCKET}/r',
      ['permission denied', BUCKET, 'storage.objects.create'],
    ),
    'no network': (
      f'http://127.0.0.1:{closed_port}',
      f'gs://{BUCKET}/r',
      ['Cannot connect to host', f'127.0.0.1:{closed_port}'],
    ),
  }
  before = list_objects(url, BUCKET)
  try:
    runs = {
      name: PgaProcess(
        ['train', f'--config={config}', f'--workdir={workdir}'],
        cwd,
        wrapper=emulated(endpoint)
        + ((sys.executable, '-c', WITHOUT_RETRY_SLEEP) if name == 'no network' else ()),
      )
      for name, (endpoint, workdir, _) in cases.items()
    }
    for run in runs.values():
      run.finish(timeout=300)
  finally:
    forbidden.shutdown()
    for run in runs.values():
      run.kill()
  for name, run in runs.items():
    assert run.proc.returncode == 2, f'{name}\n{run.tail()}'
    line = the_error_line(run)
    for expected in ['cannot write to workdir', cases[name][1], 'credentials'] + cases[name][2]:
      assert expected in line, f'{name}: {expected!r} not in {line!r}'
    assert run.last_step == 0
  assert list_objects(url, BUCKET) == before
  assert os.listdir(cwd) == []
