"""`pga benchmark` and the speed scripts of experiments/ (layer_profile.py,
decoder_benchmark.py, scaling_benchmark.py, torch_peer.py): fields present and
consistent with independent computations.

Speed itself is never asserted here (the machine is shared); the numbers are
checked for what they must satisfy whatever the load. The experiment scripts
run as subprocesses, as a user runs them.
"""

import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pga_jax import benchmark, config as config_lib, methods, train_step as ts
from pga_jax.models import param_count
from tests import cli_inprocess, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8


def tiny_config(method='lpga'):
  config = config_lib.base_config(method)
  config.batch_size = BATCH
  return config


def test_summarize_against_numpy():
  seconds = [0.010, 0.012, 0.011, 0.030, 0.009]
  s = benchmark.summarize(seconds)
  ms = np.array(seconds) * 1e3
  assert s['step_ms_median'] == pytest.approx(11.0)
  assert s['step_ms_p10'] == pytest.approx(np.percentile(ms, 10))
  assert s['step_ms_p90'] == pytest.approx(np.percentile(ms, 90))
  assert s['step_ms_mad'] == pytest.approx(1.0)  # |10-11|, |12-11|, 0, 19, 2 -> median 1
  assert s['num_timed_steps'] == 5 and s['step_ms_min'] == pytest.approx(9.0)


def test_benchmark_of_the_lpga_step(monkeypatch):
  # The LPGA and the AE step must be traced (compiled) once each. chex counts
  # per source location, which both share: 2 traces in all.
  make_step = ts.make_train_step
  monkeypatch.setattr(
    ts,
    'make_train_step',
    lambda loss_fn, optimizer: chex.assert_max_traces(make_step(loss_fn, optimizer), n=2),
  )
  chex.clear_trace_counter()
  config = tiny_config('lpga')
  peer = f'{sys.executable} -c "import json; print(json.dumps(dict({{method}}=1000.0)))"'
  result = benchmark.benchmark_config(
    config, steps=4, warmup=1, block=2, peer_command=peer, peer_rounds=2, peer_steps=3
  )
  json.dumps(result)  # JSON-able
  for field in benchmark.RESULT_FIELDS:
    assert result[field] is not None, field
  assert (result['method'], result['arch'], result['batch_size']) == ('lpga', 'conv_mnist', BATCH)
  assert result['at_step'] == config.init_steps + 1  # after the warm-up: every term on
  assert result['num_timed_steps'] == 4 and result['last_step_finite']
  median = result['step_ms_median']
  assert result['step_ms_p10'] <= median <= result['step_ms_p90']
  assert result['images_per_sec'] == pytest.approx(BATCH / (median / 1e3))
  assert result['compile_s'] > 0 and result['input_pipeline_ms_per_batch'] > 0

  # FLOPs: the AE step's are at least those of the AE loss gradient alone
  # (XLA's count of an independently jitted value_and_grad), at most that
  # plus a generous allowance per parameter for the optimizer, norm and guard.
  loss_fn, model, _ = methods.make_loss_fn(benchmark.ae_config(config), 1)
  params = model.init(jax.random.PRNGKey(0))
  x = jnp.zeros((BATCH, 28, 28, 1))
  grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  cost = grad.lower(params, x, jax.random.PRNGKey(0), jnp.asarray(0)).compile().cost_analysis()
  grad_flops = (cost[0] if isinstance(cost, list) else cost)['flops']
  n_params = param_count(params)
  assert grad_flops <= result['ae_flops_per_step'] <= grad_flops + 20 * n_params
  # LPGA does several times the AE's work (h three times: Eqs. 2 and 6).
  assert 2.5 * result['ae_flops_per_step'] < result['flops_per_step']
  assert result['flops_per_sec'] == pytest.approx(result['flops_per_step'] / (median / 1e3))
  assert result['ae_step_ratio'] == pytest.approx(median / result['ae_step_ms_median'])
  # Memory: the arguments hold parameters and momentum (float32) at least.
  assert result['argument_bytes'] >= 2 * 4 * n_params
  assert result['peak_memory_bytes'] >= result['argument_bytes']
  assert result['max_rss_bytes'] > result['peak_memory_bytes']
  # The fake peer runs at 1000 images/s: the per-round ratio is ours / 1000.
  assert result['peer_images_per_sec'] == [1000.0, 1000.0]
  assert len(result['peer_ratio_per_round']) == 2
  assert result['peer_ratio_median'] == pytest.approx(np.median(result['peer_ratio_per_round']))
  assert all(0 < r < 1e4 for r in result['peer_ratio_per_round'])
  chex.clear_trace_counter()


def test_the_text_says_when_the_pipelined_rate_was_not_measured():
  # With one timed step nothing is dispatched back to back: the result holds
  # null and the text says so instead of a number.
  result = dict(
    method='ae', arch='conv_mnist', batch_size=2, compute_dtype='float32', at_step=1,
    images_per_sec=10.0, step_ms_median=200.0, step_ms_p10=200.0, step_ms_p90=200.0,
    step_ms_mad=0.0, num_timed_steps=1, pipelined_images_per_sec=None,
    input_pipeline_ms_per_batch=0.5, compile_s=1.0, flops_per_step=2e9, flops_per_sec=1e10,
    last_step_finite=True,
  )  # fmt: skip
  assert 'pipelined n/a (one timed step)' in benchmark.format_result(result)
  result['pipelined_images_per_sec'] = 12.5
  assert 'pipelined 12.5 images/s' in benchmark.format_result(result)


def test_a_failing_peer_command_is_reported():
  with pytest.raises(RuntimeError, match='failed'):
    benchmark.run_peer(f'{sys.executable} -c "raise SystemExit(3)"', 'ae', 8, 1)
  with pytest.raises(RuntimeError, match="no 'vpga'"):
    benchmark.run_peer(f'{sys.executable} -c "print(1); print(dict())"', 'vpga', 8, 1)


def test_cli_writes_the_json(tmp_path, monkeypatch):
  config_file = tmp_path / 'bench_config.py'
  config_file.write_text(
    'from pga_jax import config as config_lib\n'
    'def get_config():\n'
    '  c = config_lib.base_config("lpga")\n'
    f'  c.batch_size = {BATCH}\n'
    '  return c\n'
  )
  out_json = tmp_path / 'out' / 'ae.json'
  # --remeasure forgets this device's cached convolution choices, not another's.
  from pga_jax.conv_forms import choice  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv(choice.CACHE_ENV, str(tmp_path / 'kernels'))
  monkeypatch.delenv(choice.FIXED_ENV, raising=False)  # the benchmark measures
  kind = choice.device_identity()[1]
  stale = {'form': 'phase', 'settled': True, 'measurements': 1}
  choice.write_cache(
    choice.cache_path(), {f'x|cpu|{kind}|old': stale, 'x|cpu|Other CPU|old': stale}
  )
  proc = helpers.run_cli(
    'benchmark',
    f'--config={config_file}',
    '--config.method=ae',
    '--steps=2',
    '--warmup=1',
    f'--json={out_json}',
    '--remeasure',
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'forgot 1 cached convolution choices' in proc.stderr
  entries = choice.read_cache(choice.cache_path())
  assert 'x|cpu|Other CPU|old' in entries and f'x|cpu|{kind}|old' not in entries
  assert any(key.split('|')[2] == kind for key in entries)  # measured afresh
  assert 'images/s' in proc.stdout
  result = json.loads(out_json.read_text())
  for field in benchmark.RESULT_FIELDS:
    assert field in result, field
  assert result['method'] == 'ae' and result['batch_size'] == BATCH
  assert result['ae_step_ratio'] == 1.0 and result['flops_per_step'] > 0
  # A config that cannot work is one line on stderr, exit 2.
  proc = cli_inprocess.pga('benchmark', f'--config={config_file}', '--config.batch_size=0')
  assert proc.returncode == 2 and 'batch_size' in proc.stderr
  assert 'Traceback' not in proc.stderr


def run_experiment(script, *args, timeout=600):
  """`python experiments/SCRIPT ARGS` from the repository root; must exit 0."""
  return helpers.run_python(
    os.path.join(REPO, 'experiments', script), *args, timeout=timeout, cwd=REPO
  )


def test_layer_profile_reports_every_pass_and_a_peak(tmp_path):
  out = tmp_path / 'layers.json'
  proc = run_experiment(
    'layer_profile.py', '--batch_size=2', '--steps=2', '--peak_size=64', f'--json={out}'
  )
  assert 'peak' in proc.stdout
  r = json.loads(out.read_text())
  assert r['peak_matmul_gflops_per_sec'] > 0
  assert len(r['layers']) == 6
  for row in r['layers'].values():
    assert set(row) == {'fwd', 'fwd+dW', 'fwd+dX', 'fwd+both'}
    # XLA's FLOP count: a gradient pass does more work than the forward alone.
    assert row['fwd+both']['gflops'] > row['fwd']['gflops'] > 0
    assert all(v['ms'] > 0 for v in row.values())
  # The dense layer's forward: 2 * batch * 6272 * 1024 multiply-adds.
  dense = r['layers']['enc dense 6272->1024']['fwd']['gflops']
  assert abs(dense - 2 * 2 * 6272 * 1024 / 1e9) < 1e-3 * dense


def test_decoder_benchmark_times_both_forms_on_the_same_weights(tmp_path):
  out = tmp_path / 'decoder.json'
  proc = run_experiment(
    'decoder_benchmark.py', '--batch_size=4', '--steps=2', '--warmup=1', f'--json={out}'
  )
  assert 'lax.conv_transpose' in proc.stdout
  r = json.loads(out.read_text())
  assert r['conv_impl'] == 'phase'
  assert r['max_abs_diff_outputs_and_grads'] < 1e-4  # same function, same weights
  for impl in ('conv_transpose', 'upconv'):
    for kind in ('fwd', 'fwd_bwd'):
      assert r[f'{impl}_{kind}_ms_median'] > 0
  assert r['fwd_bwd_speedup'] == pytest.approx(
    r['conv_transpose_fwd_bwd_ms_median'] / r['upconv_fwd_bwd_ms_median']
  )


def test_the_torch_peer_reports_images_per_second_for_every_method():
  # torch is a test dependency (requirements-test.txt), not one of pga_jax.
  script = os.path.join(REPO, 'experiments', 'torch_peer.py')
  peer = f'{sys.executable} {script} --methods {{method}} --batch {{batch}} --steps {{steps}}'
  assert benchmark.run_peer(peer, 'lpga', 4, 1) > 0  # as `pga benchmark --peer_command` runs it
  proc = run_experiment('torch_peer.py', '--batch', '4', '--steps', '1', timeout=300)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(result) == {'ae', 'vae', 'lpga', 'vpga'}
  assert all(v > 0 for v in result.values())


def test_scaling_benchmark_reports_the_step_and_its_communication():
  config = json.dumps({'method': 'ae', 'batch_size': 8})
  proc = run_experiment(
    'scaling_benchmark.py', '--devices', '1', '2', '--steps', '1', '--config', config
  )
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
  assert [r['devices'] for r in rows] == [1, 2]
  assert all(r['examples_per_sec'] > 0 for r in rows)
  # Two devices: gradients are all-reduced; nothing is gathered or sent to the host.
  assert rows[0]['all-reduce'] == 0 and rows[1]['all-reduce'] >= 1
  assert rows[1]['gathers'] == 0 and rows[1]['host'] == 0
  assert '| devices |' in proc.stdout
