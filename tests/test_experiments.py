"""The paper-reproduction scripts run end to end on a tiny budget (offline, domain features)."""

import json
import os
import re
import subprocess
import sys

import pytest

from pga_jax import data
from tests import cli_inprocess, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  return helpers.make_idx_dir(tmp_path_factory, num_test=48)


def run_script(script, *args, cache):
  """`python experiments/SCRIPT ARGS` with $PGA_CACHE_DIR=cache, run in this
  process (`cli_inprocess.script`); asserts that it exits 0."""
  result = cli_inprocess.script(
    os.path.join(REPO, 'experiments', script), *args, PGA_CACHE_DIR=str(cache)
  )
  assert result.returncode == 0, result.tail()
  return result


def run_failing_script(script, *args):
  """`python experiments/SCRIPT ARGS` expected to fail, run in this process: the
  result (exit status, stdout, stderr), unchecked."""
  return cli_inprocess.script(os.path.join(REPO, 'experiments', script), *args)


def test_table1_runs_end_to_end_with_domain_features(idx_dir, tmp_path):
  out_md = tmp_path / 'table1.md'
  run_script(
    'table1.py',
    '--methods=lpga,vae',
    '--datasets=mnist',
    '--seeds=0,1',
    '--num_steps=2',
    '--batch_size=8',
    '--dataset_override=idx',
    f'--data_dir={idx_dir}',
    '--features=domain',
    '--num_samples=24',
    f'--workroot={tmp_path}/runs',
    f'--out={out_md}',
    cache=tmp_path / 'cache',
  )
  table = out_md.read_text()
  assert '| LPGA |' in table and '| VAE |' in table and '(paper 12.06 ± 0.12)' in table
  results = json.loads((tmp_path / 'table1.json').read_text())
  assert sorted(results) == ['mnist/lpga_s0', 'mnist/lpga_s1', 'mnist/vae_s0', 'mnist/vae_s1']
  for r in results.values():
    assert r['num_samples'] == 24 and r['features'] == 'domain' and r['step'] == 2
    assert r['fid'] > 0 and 0 <= r['precision'] <= 1 and 0 <= r['recall'] <= 1
  # The two seeds are different runs, so their FIDs differ.
  assert results['mnist/lpga_s0']['fid'] != results['mnist/lpga_s1']['fid']


def test_fashion_study_and_figures_scripts(idx_dir, tmp_path):
  out = tmp_path / 'study'
  run_script(
    'fashion_study.py',
    '--methods=ae,lpga',
    '--steps=3',
    '--batch_size=8',
    '--dataset=idx',
    f'--data_dir={idx_dir}',
    '--num_samples=24',
    f'--workroot={tmp_path}/runs',
    f'--out={out}',
    cache=tmp_path / 'cache',
  )
  table = (out / 'results.md').read_text()
  assert '| AE |' in table and '| LPGA |' in table
  for name in ('samples_ae.png', 'samples_lpga.png', 'interpolations_lpga.png'):
    assert (out / name).stat().st_size > 0
  run_script(
    'figures.py',
    f'--runs=lpga={tmp_path}/runs/lpga_s0',
    f'--out={tmp_path}/figs',
    '--pairs=3',
    cache=tmp_path / 'cache',
  )
  assert (tmp_path / 'figs' / 'figure1_lpga.png').exists()
  assert (tmp_path / 'figs' / 'figure2_lpga.png').exists()


def test_a_study_stopped_by_sigterm_checkpoints_and_exits_0(idx_dir, tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top

  workroot = tmp_path / 'runs'
  process = subprocess.Popen(
    [
      sys.executable,
      os.path.join(REPO, 'experiments', 'fashion_study.py'),
      '--methods=ae,vae',
      '--steps=100000',
      '--batch_size=8',
      '--dataset=idx',
      f'--data_dir={idx_dir}',
      '--num_samples=24',
      f'--workroot={workroot}',
      f'--out={tmp_path}/out',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=REPO,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PGA_CACHE_DIR=str(tmp_path / 'cache')),
  )
  config_file = workroot / 'ae_s0' / 'config.json'
  deadline = time.time() + 240
  while not config_file.exists() and time.time() < deadline and process.poll() is None:
    time.sleep(0.5)
  time.sleep(3)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=240)
  assert process.returncode == 0, stderr[-3000:]
  assert 'stopped by a signal at step' in stdout and 'the same command resumes' in stdout
  step = checkpointing.checkpoint_manager(str(workroot / 'ae_s0'), 3).latest_step()
  assert step is not None and 0 < step < 100000
  assert not (workroot / 'vae_s0').exists()  # the study stopped; it did not go on


def test_logdet_tracking_exact_and_eq6_estimate_over_checkpoints(idx_dir, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax import enable_x64  # pylint: disable=g-import-not-at-top

  from experiments import runner  # pylint: disable=g-import-not-at-top
  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / 'lpga')
  # LPGA, 6 steps (2 of warm-up), checkpoints at steps 3 and 6.
  runner.train_run(helpers.tiny_config(idx_dir, sample_every=6), workdir)
  out_png = tmp_path / 'study' / 'logdet.png'
  out = run_script(
    'logdet_tracking.py',
    f'--workdir={workdir}',
    f'--out={out_png}',
    '--num_images=16',
    '--ks=1,16',
    cache=tmp_path / 'cache',
  )
  assert out_png.stat().st_size > 0
  results = json.loads((tmp_path / 'study' / 'logdet.json').read_text())
  steps = sorted(checkpointing.checkpoint_manager(workdir, 3).all_steps())
  assert steps == [3, 6]
  assert [e['step'] for e in results['steps']] == steps
  assert results['method'] == 'lpga' and results['ks'] == [1, 16]
  for e in results['steps']:
    assert re.search(rf'^\s*{e["step"]}\s+{e["exact_mean"]:.4f}\s', out.stdout, re.M), out.stdout
    exact = np.asarray(e['per_image']['exact'])
    assert exact.shape == (16,) and np.all(np.isfinite(exact))
    np.testing.assert_allclose(e['exact_mean'], exact.mean(), rtol=1e-6)
    for k in ('1', '16'):
      gap = np.asarray(e['per_image'][f'k{k}']) - exact
      np.testing.assert_allclose(e['estimates'][k]['gap_mean'], gap.mean(), rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(e['estimates'][k]['gap_std'], gap.std(), rtol=1e-6, atol=1e-9)
    # Eq. 6 bounds log|det| from above in expectation (Jensen): the K=16 estimate is
    # at least the exact value on average, up to the Monte Carlo error over images.
    gap16 = np.asarray(e['per_image']['k16']) - exact
    assert gap16.mean() >= -3 * gap16.std() / np.sqrt(gap16.size) - 1e-3, e['estimates']

  # Independently: jacrev of h = f o g on one latent, in float64, and numpy's slogdet.
  config, model, params, step = checkpointing.load_trained(workdir, steps[0])
  assert step == steps[0] and not config.use_bn
  images = data.scale_images(helpers.synthetic_digits(48, seed=1)[:16, :, :, None])
  latent = np.asarray(model.encode(params['encoder'], images).mean[0], np.float64)
  with enable_x64():
    params64 = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params)
    jac = jax.jacrev(lambda z: model.encode_decode(params64, z[None])[0])(latent)
    expected = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
  got = results['steps'][0]['per_image']['exact'][0]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)

  # A run directory without checkpoints: one line on stderr, exit status 2.
  empty = tmp_path / 'empty'
  empty.mkdir()
  checkpointing.write_config(str(empty), helpers.tiny_config(idx_dir))
  bad = run_failing_script('logdet_tracking.py', f'--workdir={empty}', f'--out={tmp_path}/x.png')
  assert bad.returncode == 2
  errors = [line for line in bad.stderr.splitlines() if line.startswith('pga: error:')]
  assert len(errors) == 1 and 'no checkpoint' in errors[0], bad.stderr[-2000:]


def _write_curve(workdir, rows):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'eval_curve.jsonl'), 'a') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')


def test_fid_curves_plots_and_tabulates_recorded_evaluations(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top

  def row(step, fid, precision=0.5, recall=0.25, kid=1.0):
    return {
      'step': step,
      'eval_domain/fid': fid,
      'eval_domain/precision': precision,
      'eval_domain/recall': recall,
      'eval_domain/kid': kid,
      'eval_domain/kid_std': 0.1,
    }

  runs = tmp_path / 'runs'
  _write_curve(runs / 'vae_s0', [row(1000, 80.0), row(2000, 50.0)])
  # Seed 1 was resumed and evaluated step 2000 twice: the later record counts.
  _write_curve(runs / 'vae_s1', [row(1000, 82.0), row(2000, 99.0), row(2000, 54.0, 0.7)])
  _write_curve(runs / 'lpga_s0', [row(1000, 200.0, 0.4, 0.0, 3.0)])
  out = run_script(
    'fid_curves.py', f'--workroot={runs}', f'--out={tmp_path}/fid.png', cache=tmp_path / 'cache'
  )
  assert (tmp_path / 'fid.png').stat().st_size > 0
  curves = json.loads((tmp_path / 'fid.json').read_text())
  assert sorted(curves) == ['lpga_s0', 'vae_s0', 'vae_s1']
  assert [(r['step'], r['fid']) for r in curves['vae_s1']] == [(1000, 82.0), (2000, 54.0)]
  vae = re.search(
    r'^\| VAE \| 2000 \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+) \|', out.stdout, re.M
  )
  assert vae, out.stdout
  np.testing.assert_allclose(float(vae[1]), 52.0, rtol=1e-3)
  np.testing.assert_allclose(float(vae[2]), np.std([50.0, 54.0], ddof=1), rtol=0.02)  # 2 digits
  np.testing.assert_allclose(float(vae[3]), 0.6, rtol=1e-3)
  assert re.search(r'^\| LPGA \| 1000 \| 200 \| 0.4 \| 0 \| 3 \| 1 \|$', out.stdout, re.M)
  # FID by step, one column per run (LPGA was not evaluated at step 2000).
  assert re.search(r'^\| step \| vae_s0 \| vae_s1 \| lpga_s0 \|$', out.stdout, re.M), out.stdout
  assert re.search(r'^\| 1000 \| 80 \| 82 \| 200 \|$', out.stdout, re.M), out.stdout
  assert re.search(r'^\| 2000 \| 50 \| 54 \|  \|$', out.stdout, re.M), out.stdout


def test_fid_curves_labels_the_runs_of_several_workroots_by_folder(tmp_path):
  def row(step, fid):
    return {
      'step': step,
      'eval_domain/fid': fid,
      'eval_domain/precision': 0.5,
      'eval_domain/recall': 0.25,
      'eval_domain/kid': 1.0,
      'eval_domain/sharpness': fid / 100,
    }

  _write_curve(tmp_path / 'main' / 'lpga_s0', [row(1000, 40.0)])
  _write_curve(tmp_path / 'main' / 'vae_s0', [row(1000, 30.0)])
  _write_curve(tmp_path / 'alt' / 'lpga_s0', [row(1000, 20.0)])
  _write_curve(tmp_path / 'alt' / 'lpga_s1', [row(1000, 24.0)])
  _write_curve(tmp_path / 'alt' / 'lpga_sweep', [row(1000, 1.0)])  # not a METHOD_sSEED run
  out = run_script(
    'fid_curves.py',
    f'--workroot={tmp_path / "main"},{tmp_path / "alt"}',
    f'--out={tmp_path}/fid.png',
    cache=tmp_path / 'cache',
  )
  curves = json.loads((tmp_path / 'fid.json').read_text())
  assert sorted(curves) == ['alt/lpga_s0', 'alt/lpga_s1', 'main/lpga_s0', 'main/vae_s0']
  # Table rows in the order of the workroots, then of --methods (vae before lpga).
  summary = out.stdout.split('\n\n')[0]  # the first table
  assert re.findall(r'^\| (\S+) \|', summary, re.M)[1:] == ['main/VAE', 'main/LPGA', 'alt/LPGA']
  assert re.search(r'^\| main/LPGA \| 1000 \| 40 \|', out.stdout, re.M), out.stdout
  assert re.search(r'^\| alt/LPGA \| 1000 \| 22 ± 2.8 \|', out.stdout, re.M), out.stdout
  # Sharpness: a column of the summary and a table by step (runs in the order above).
  assert re.search(r'^\| main/LPGA \| 1000 \| 40 \| .* \| 0\.4 \| 1 \|$', out.stdout, re.M)
  assert re.search(r'^\| 1000 \| 0\.3 \| 0\.4 \| 0\.2 \| 0\.24 \|$', out.stdout, re.M), out.stdout


def test_find_runs_refuses_workroots_with_the_same_folder_name(tmp_path):
  from experiments import runner  # pylint: disable=g-import-not-at-top

  with pytest.raises(SystemExit, match='share a folder name'):
    runner.find_runs([str(tmp_path / 'a' / 'study'), str(tmp_path / 'b' / 'study/')], ['vae'])


def test_line_styles_give_a_method_one_colour_and_a_workroot_its_own_dashes():
  from experiments import runner  # pylint: disable=g-import-not-at-top

  labels = ['main/vae_s0', 'main/lpga_s0', 'main/vae_s1', 'alt/lpga_s0', 'alt/vae_s0']
  styles = runner.line_styles(labels)
  for method in ('vae', 'lpga'):
    runs = [styles[label] for label in labels if f'/{method}_' in label]
    assert len({style['color'] for style in runs}) == 1
    assert len({style['linestyle'] for style in runs}) == len(runs)
  assert styles['main/vae_s0']['color'] != styles['main/lpga_s0']['color']
  # the same workroot and seed draw the same dash whatever the method
  assert styles['alt/lpga_s0']['linestyle'] == styles['alt/vae_s0']['linestyle']
  assert styles['main/lpga_s0']['linestyle'] == styles['main/vae_s0']['linestyle']
  assert styles['main/vae_s0']['linestyle'] != styles['alt/vae_s0']['linestyle']


def test_term_curves_reads_each_terms_log_and_keeps_the_later_value_of_a_resumed_step(tmp_path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top

  runs = tmp_path / 'runs'
  logged = {
    'lpga_s0': [
      {2: dict(rec=0.5, nll_dec=-0.25)},
      {2: dict(rec=0.4, nll_dec=-0.5), 4: dict(rec=0.3)},
    ],
    'vae_s0': [{2: dict(rec=0.6, kl=0.125)}],
  }
  for name, sessions in logged.items():
    for session in sessions:  # one event file per session, as after a resume
      writer = metric_writers.SummaryWriter(str(runs / name))
      for step, scalars in session.items():
        writer.write_scalars(step, scalars)
      writer.close()
  out = run_script(
    'term_curves.py', f'--workroot={runs}', f'--out={tmp_path}/terms.png', cache=tmp_path / 'cache'
  )
  assert (tmp_path / 'terms.png').stat().st_size > 0
  curves = json.loads((tmp_path / 'terms.json').read_text())
  assert curves['lpga_s0']['rec'] == [[2, pytest.approx(0.4)], [4, pytest.approx(0.3)]]
  assert curves['lpga_s0']['nll_dec'] == [[2, -0.5]]
  assert curves['vae_s0'] == {'rec': [[2, pytest.approx(0.6)]], 'kl': [[2, 0.125]]}
  assert re.search(r'^\| lpga_s0 \| 0.3 @4 \|  \| ', out.stdout, re.M), out.stdout


def test_fashion_study_refuses_overrides_that_are_not_json():
  result = run_failing_script('fashion_study.py', '--print_configs', '--overrides={vae: 1}')
  assert result.returncode == 1
  assert '--overrides is not JSON' in result.stderr
  assert 'Traceback' not in result.stderr


def test_class_balance_classifies_the_evaluations_samples_of_each_run(idx_dir, tmp_path):
  import glob  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from experiments import runner  # pylint: disable=g-import-not-at-top
  from pga_jax import checkpointing, sampling  # pylint: disable=g-import-not-at-top
  from pga_jax.data import to_uint8  # pylint: disable=g-import-not-at-top
  from pga_jax.evaluation import classifier as classifier_lib  # pylint: disable=g-import-not-at-top

  runs = tmp_path / 'runs'
  for method in ('vae', 'lpga'):
    runner.train_run(helpers.tiny_config(idx_dir, method), str(runs / f'{method}_s0'))
  out = run_script(
    'class_balance.py',
    f'--workroot={runs}',
    '--methods=vae,lpga',
    '--num_samples=30',
    f'--out={tmp_path}/mix.json',
    cache=tmp_path / 'cache',
  )
  results = json.loads((tmp_path / 'mix.json').read_text())
  assert sorted(results['runs']) == ['lpga_s0', 'vae_s0']
  # Independently: the cached classifier on sampling.sample's images (seed 0),
  # rounded to 8 bits as saved samples are, and on the real test images.
  (directory,) = glob.glob(str(tmp_path / 'cache' / 'classifiers' / '*'))
  classifier = classifier_lib.load(directory)
  real = data.load_split('idx', 'test', idx_dir, image_size=28, channels=1).images
  real_counts = np.bincount(classifier.logits(real).argmax(-1), minlength=10)
  np.testing.assert_allclose(results['real']['fractions'], real_counts / real_counts.sum())
  for name in ('vae_s0', 'lpga_s0'):
    config, model, params, step = checkpointing.load_trained(str(runs / name))
    reference = sampling.reference_latents(model, config.batch_size, config.seed)
    images = to_uint8(sampling.sample(model, params, jax.random.PRNGKey(0), 30, reference))
    logits = classifier.logits(images)
    counts = np.bincount(logits.argmax(-1), minlength=10)
    got = results['runs'][name]
    assert got['step'] == step == 6
    np.testing.assert_allclose(got['fractions'], counts / 30)
    top = np.exp(logits.max(-1) - np.log(np.exp(logits).sum(-1)))
    np.testing.assert_allclose(got['confidence'], top.mean(), rtol=1e-5)
    tv = 0.5 * np.abs(counts / 30 - real_counts / real_counts.sum()).sum()
    np.testing.assert_allclose(got['total_variation'], tv, rtol=1e-9)
    assert re.search(rf'^\| {name} \| 6 \| {tv:.3f} \|', out.stdout, re.M), out.stdout

  bad = run_failing_script(
    'class_balance.py', f'--workroot={tmp_path}/nothing', f'--out={tmp_path}/x.json'
  )
  assert (
    bad.returncode == 1
    and 'class_balance: no runs METHOD_sSEED of vae,lpga,vpga,lvpga' in bad.stderr
  )
  assert not (tmp_path / 'x.json').exists()


def test_term_curves_keeps_the_value_with_the_later_wall_time_whatever_the_file_names(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  run = tmp_path / 'runs' / 'vpga_s0'
  run.mkdir(parents=True)
  # Two files written in the same second differ by a per-process counter:
  # as text, counter 10 (the later file) sorts before counter 9.
  for counter, wall_time, rec in ((9, 1000.25, 0.75), (10, 1000.5, 0.5)):
    with tf.io.TFRecordWriter(str(run / f'events.out.tfevents.1000.host.1.{counter}.v2')) as writer:
      event = tf.compat.v1.Event(wall_time=wall_time, step=300)
      event.summary.value.add(tag='rec', simple_value=rec)
      writer.write(event.SerializeToString())
  run_script(
    'term_curves.py',
    f'--workroot={tmp_path / "runs"}',
    f'--out={tmp_path}/terms.png',
    cache=tmp_path / 'cache',
  )
  curves = json.loads((tmp_path / 'terms.json').read_text())
  assert curves['vpga_s0']['rec'] == [[300, 0.5]]


def test_term_curves_reports_each_runs_training_hours_summed_over_its_sessions(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  run = tmp_path / 'runs' / 'vpga_s0'
  run.mkdir(parents=True)
  # Two sessions (one event file each): 0.5 h and 1 h between first and last event.
  for index, (start, times) in enumerate(((1000.0, (0, 600, 1800)), (9000.0, (0, 3600)))):
    with tf.io.TFRecordWriter(str(run / f'events.out.tfevents.{index}.host')) as writer:
      for step, offset in enumerate(times):
        event = tf.compat.v1.Event(wall_time=start + offset, step=100 * (step + 1))
        event.summary.value.add(tag='rec', simple_value=1.0 / (step + 1))
        writer.write(event.SerializeToString())
  out = run_script(
    'term_curves.py',
    f'--workroot={tmp_path / "runs"}',
    f'--out={tmp_path}/terms.png',
    cache=tmp_path / 'cache',
  )
  assert re.search(r'^\| vpga_s0 \| 0.3333 @300 \| 1.50 \|$', out.stdout, re.M), out.stdout
  assert 'training time of these runs: 1.50 h' in out.stdout


def test_fid_anatomy_weighted_statistics_and_nearest_neighbours():
  import numpy as np  # pylint: disable=g-import-not-at-top

  from pga_jax.evaluation import fid_parts  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  x = rng.normal(size=(40, 3))
  w = rng.uniform(0.1, 3.0, size=40)
  mu, sigma = fid_parts.weighted_statistics(x, w)
  np.testing.assert_allclose(mu, np.average(x, axis=0, weights=w), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, aweights=w), rtol=1e-10)
  centres = rng.normal(size=(25, 3))
  dist, index = fid_parts.nearest_distances(x, centres, block=7)
  brute = np.linalg.norm(x[:, None] - centres[None], axis=-1)
  np.testing.assert_array_equal(index, brute.argmin(1))
  np.testing.assert_allclose(dist, brute.min(1), rtol=1e-9)


def test_fid_anatomy_runs_end_to_end_and_its_fid_is_the_evaluations(idx_dir, tmp_path):
  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  runs = tmp_path / 'runs'
  run_script(
    'fashion_study.py',
    '--methods=vae',
    '--steps=4',
    '--batch_size=8',
    '--dataset=idx',
    f'--data_dir={idx_dir}',
    '--num_samples=24',
    f'--workroot={runs}',
    f'--out={tmp_path}/study',
    cache=tmp_path / 'cache',
  )
  out = tmp_path / 'anatomy'
  run_script(
    'fid_anatomy.py',
    f'--workroot={runs}',
    '--methods=vae',
    '--num_samples=40',
    '--min_class_images=2',
    f'--out={out}',
    cache=tmp_path / 'cache',
  )
  results = json.loads((out / 'anatomy.json').read_text())
  assert sorted(results) == ['real test images', 'vae_s0 @4']
  for r in results.values():
    assert r['fid_mean_term'] + r['fid_covariance_term'] == pytest.approx(r['fid'])
    assert len(r['per_class']) == 10
  assert results['real test images']['nn_distance_ratio'] == 1.0
  for name in ('nn', 'confidence', 'pairs'):
    assert (out / f'anatomy_vae_s0_@4_{name}.png').stat().st_size > 0
  # The same FID as the evaluation's, which computes it by another path.
  config, model, params, step = checkpointing.load_trained(str(runs / 'vae_s0'))
  evaluator = evaluate.evaluator_for_config(config, 'domain', cache_dir=str(tmp_path / 'cache'))
  expected = evaluate.evaluate_model(evaluator, model, params, config, 40, seed=0, step=step)
  assert results['vae_s0 @4']['fid'] == pytest.approx(expected['fid'], rel=1e-6)


def print_configs(*flag_sets):
  """[{run name: config dict}] that fashion_study.py would train with each set
  of flags (one child process for all)."""
  script = os.path.join(REPO, 'experiments', 'fashion_study.py')
  return helpers.fashion_study_configs([[script, *flags] for flags in flag_sets], REPO)


def test_short_warm_ups_ramp_by_default_and_the_reference_warm_up_switches_at_once():
  short, reference, chosen = print_configs(
    ['--steps=1500', '--methods=lpga,lvpga,vpga,vae'],
    ['--steps=50000', '--init_steps=3000', '--methods=lpga'],
    ['--steps=1500', '--warmup_ramp_steps=0', '--methods=lpga', '--vae=adam'],
  )
  for name in ('lpga_s0', 'lvpga_s0'):
    assert (short[name]['init_steps'], short[name]['warmup_ramp_steps']) == (500, 500)
  assert short['vpga_s0']['warmup_ramp_steps'] == 0 and short['vae_s0']['init_steps'] == 0
  # The paper's VAE: SGD with momentum 0.9 at PGA's learning rate.
  assert short['vae_s0']['optimizer'] == dict(
    short['lpga_s0']['optimizer'], name='sgd', learning_rate=0.1, momentum=0.9
  )
  assert (reference['lpga_s0']['init_steps'], reference['lpga_s0']['warmup_ramp_steps']) == (
    3000,
    0,
  )
  assert chosen['lpga_s0']['warmup_ramp_steps'] == 0


def test_the_vae_sweeps_learning_rate_and_beta_one_at_a_time():
  sgd, adam = print_configs(
    ['--sweep', '--methods=vae', '--steps=2000'],
    ['--sweep', '--methods=vae', '--vae=adam', '--steps=500'],
  )
  settings = {
    name: (c['optimizer']['name'], c['optimizer']['learning_rate'], c['beta'])
    for name, c in sgd.items()
  }
  assert settings == {
    'sweep_vae_learning_rate0.05': ('sgd', 0.05, 0.1),
    'sweep_vae_learning_rate0.1': ('sgd', 0.1, 0.1),
    'sweep_vae_learning_rate0.2': ('sgd', 0.2, 0.1),
    'sweep_vae_beta0.05': ('sgd', 0.1, 0.05),
    'sweep_vae_beta0.2': ('sgd', 0.1, 0.2),
  }
  assert {
    name: (c['optimizer']['name'], c['optimizer']['b1'], c['beta']) for name, c in adam.items()
  } == {f'sweep_vae_beta{b}': ('adam', 0.5, b) for b in (0.02, 0.05, 0.1)}


def test_grids_by_step_puts_each_runs_grids_side_by_side(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  for name, steps in (('vae_s0', (10, 20)), ('lpga_s0', (10,))):
    figures = tmp_path / 'runs' / name / 'figures'
    figures.mkdir(parents=True)
    for step in steps:
      Image.fromarray(np.full((12, 12), step, np.uint8)).save(figures / f'samples_{step:08d}.png')
  out = run_script(
    'grids_by_step.py',
    f'--workroot={tmp_path / "runs"}',
    '--methods=vae,lpga',
    '--steps=10,20',
    f'--out={tmp_path}/grids.png',
    cache=tmp_path / 'cache',
  )
  assert '3 of 4 grids' in out.stdout  # lpga_s0 has no grid at step 20
  assert (tmp_path / 'grids.png').stat().st_size > 0
