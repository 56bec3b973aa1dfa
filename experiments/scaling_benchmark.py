"""Throughput per device and the compiled step's communication, for 1..8 CPU devices.

  .venv/bin/python experiments/scaling_benchmark.py [--devices 1 2 4 8] [--steps 10]
      [--config '{"method": "lpga", "batch_size": 64}']

Each device count runs in a fresh process
(XLA_FLAGS=--xla_force_host_platform_device_count=N) through
tests/distributed_worker.py, the worker of tests/test_distributed.py: the
trainer's jitted step, timed over --steps steps after 3 warm-up steps, and
its optimised HLO. Simulated devices
share the machine's cores, so expect no speed-up on a small CPU; the point is
that the per-device work is 1/N of the batch and communication is only the
all-reduces of gradients and batch statistics (no gathers, no host transfers,
no whole-batch arrays).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import helpers  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG = {
  'method': 'lpga',
  'use_bn': False,
  'batch_size': 64,
  'init_steps': 0,
  'learning_rate': 0.1,
}
BYTES = {'f32': 4, 'f64': 8, 's32': 4, 'u32': 4, 'bf16': 2, 'pred': 1}


def op_bytes(text: str, op: str) -> int:
  """Bytes of the results of every `op` instruction (e.g. all-reduce, copy)."""
  total = 0
  for line in text.splitlines():
    if f' {op}(' not in line and f' {op}-start(' not in line:
      continue
    lhs = line.split(f' {op}', 1)[0].split('=', 1)[1]
    for dtype, dims in re.findall(r'(f32|f64|s32|u32|bf16|pred)\[([\d,]*)\]', lhs):
      size = 1
      for d in filter(None, dims.split(',')):
        size *= int(d)
      total += size * BYTES[dtype]
  return total


def whole_batch_arrays(text: str, global_batch: int, devices: int) -> list:
  """Shapes [B, ...] of rank >= 2 (B the global batch) whose per-device twin [B/n, ...] occurs.

  An activation computed for the whole batch on every device shows up like
  this; a kernel that merely has B channels does not.
  """
  if devices == 1:
    return []
  shapes = set(re.findall(r'\b(?:f32|bf16|f64)\[([\d,]+)\]', text))
  local = global_batch // devices
  return sorted(
    s
    for s in shapes
    if ',' in s
    and s.split(',')[0] == str(global_batch)
    and ','.join([str(local)] + s.split(',')[1:]) in shapes
  )


def hlo_summary(text: str, global_batch: int, devices: int) -> dict:
  return {
    'all-reduce': len(re.findall(r'\ball-reduce(?:-start)?\(', text)),
    'all-reduce MB': op_bytes(text, 'all-reduce') / 1e6,
    'gathers': len(
      re.findall(
        r'\b(?:all-gather|all-to-all|collective-permute|reduce-scatter)'
        r'(?:-start)?\(',
        text,
      )
    ),
    'host': len(re.findall(r'\b(?:send|recv|infeed|outfeed)(?:-start)?\(', text)),
    'copy': len(re.findall(r'\bcopy(?:-start)?\(', text)),
    'copy MB': op_bytes(text, 'copy') / 1e6,
    'whole-batch arrays': len(whole_batch_arrays(text, global_batch, devices)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--devices', type=int, nargs='+', default=[1, 2, 4, 8])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument(
    '--config',
    default=json.dumps(DEFAULT_CONFIG),
    help='JSON overrides of distributed_worker.test_config',
  )
  args = parser.parse_args()
  overrides = json.loads(args.config)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    idx_dir = os.path.join(tmp, 'idx')
    helpers.write_idx_images(
      idx_dir, helpers.synthetic_digits(max(96, overrides.get('batch_size', 64)))
    )
    for n in args.devices:
      env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
      env.update(TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
      if n > 1:
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={n}'
      hlo_path = os.path.join(tmp, f'step{n}.hlo')
      cmd = [
        sys.executable,
        os.path.join(REPO, 'tests', 'distributed_worker.py'),
        f'--idx_dir={idx_dir}',
        f'--config={json.dumps(overrides)}',
        json.dumps({'mode': 'hlo', 'out': hlo_path}),
        json.dumps({'mode': 'bench', 'num_steps': args.steps}),
      ]
      out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, check=False)
      if out.returncode:
        sys.exit(f'{n} devices failed:\n{out.stderr[-3000:]}')
      results = [json.loads(l[7:]) for l in out.stdout.splitlines() if l.startswith('RESULT=')]
      hlo, bench = results
      with open(hlo_path) as f:
        summary = hlo_summary(f.read(), bench['global_batch'], n)
      rows.append(
        dict(
          devices=n,
          **{
            k: bench[k]
            for k in ('steps_per_sec', 'examples_per_sec', 'examples_per_sec_per_device')
          },
          **{'params MB': hlo['param_bytes'] / 1e6},
          **summary,
        )
      )
      print(json.dumps(rows[-1]), flush=True)

  print(f'\nconfig overrides: {overrides}; {os.cpu_count()} CPU cores')
  header = (
    'devices',
    'steps/s',
    'examples/s',
    'examples/s/device',
    'params MB',
    'all-reduce ops',
    'all-reduce MB',
    'gathers',
    'host transfers',
    'copy ops',
    'copy MB',
    'whole-batch arrays',
  )
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for r in rows:
    print(
      '| '
      + ' | '.join(
        [
          str(r['devices']),
          f'{r["steps_per_sec"]:.3f}',
          f'{r["examples_per_sec"]:.1f}',
          f'{r["examples_per_sec_per_device"]:.1f}',
          f'{r["params MB"]:.1f}',
          str(r['all-reduce']),
          f'{r["all-reduce MB"]:.1f}',
          str(r['gathers']),
          str(r['host']),
          str(r['copy']),
          f'{r["copy MB"]:.1f}',
          str(r['whole-batch arrays']),
        ]
      )
      + ' |'
    )


if __name__ == '__main__':
  main()
