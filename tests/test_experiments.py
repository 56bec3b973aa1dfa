"""The paper-reproduction scripts run end to end on a tiny budget (offline, domain features)."""
import json
import os
import subprocess
import sys

import pytest

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp('idx'))
  helpers.write_idx_images(folder, helpers.synthetic_digits(96))
  helpers.write_idx_images(folder, helpers.synthetic_digits(48, seed=1), prefix='t10k')
  return folder


def run_script(script, *args, cache, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PGA_CACHE_DIR=str(cache))
  out = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', script), *args],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
  assert out.returncode == 0, out.stderr[-4000:]
  return out


def test_table1_runs_end_to_end_with_domain_features(idx_dir, tmp_path):
  out_md = tmp_path / 'table1.md'
  run_script('table1.py', '--methods=lpga,vae', '--datasets=mnist', '--seeds=0,1',
             '--num_steps=2', '--batch_size=8', '--dataset_override=idx',
             f'--data_dir={idx_dir}', '--features=domain', '--num_samples=24',
             f'--workroot={tmp_path}/runs', f'--out={out_md}', cache=tmp_path / 'cache')
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
  run_script('fashion_study.py', '--methods=ae,lpga', '--steps=3', '--batch_size=8',
             '--dataset=idx', f'--data_dir={idx_dir}', '--num_samples=24',
             f'--workroot={tmp_path}/runs', f'--out={out}', cache=tmp_path / 'cache')
  table = (out / 'results.md').read_text()
  assert '| AE |' in table and '| LPGA |' in table
  for name in ('samples_ae.png', 'samples_lpga.png', 'interpolations_lpga.png'):
    assert (out / name).stat().st_size > 0
  run_script('figures.py', f'--runs=lpga={tmp_path}/runs/lpga_s0', f'--out={tmp_path}/figs',
             '--pairs=3', cache=tmp_path / 'cache')
  assert (tmp_path / 'figs' / 'figure1_lpga.png').exists()
  assert (tmp_path / 'figs' / 'figure2_lpga.png').exists()
