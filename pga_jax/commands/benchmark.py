"""pga benchmark --config=FILE [--config.FIELD=VALUE ...] [--steps=N] [--json=PATH]

Speed of the config's real train step on synthetic images of the right shape:
compile time, median and spread of the step time after warm-up, images/s,
XLA's FLOP count and the achieved FLOP/s, peak memory, and the ratio to the
AE step of the same architecture (timed alternately in the same process).

  pga benchmark --config=experiments/configs/mnist_lpga.py --steps=30 --json=lpga.json
  pga benchmark --config=experiments/configs/mnist_lpga.py --config.method=ae
  pga benchmark --decoder_only [--arch=conv_mnist] [--batch_size=64]
      decoder forward and forward+backward: lax.conv_transpose vs phase decomposition
  pga benchmark --config=... --peer_command='/tmp/torch-peer/bin/python \\
      PATH/TO/torch_peer.py --methods {method} --batch {batch} --steps {steps}'
      rounds of the peer and of our step, alternately; reports the ratio per round

The machine may be shared: compare ratios measured in one session, not
absolute numbers across sessions. See docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from pga_jax.commands import common


def define_flags():
  """The flags every mode reads, then those of each mode."""
  common.define_config_flag()
  flags.DEFINE_integer('steps', 20, 'Timed steps (after the warm-up steps).')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
  flags.DEFINE_string('json', None, 'Write the result as JSON to this path.')
  flags.DEFINE_bool(
    'remeasure',
    False,
    "Forget this device's cached convolution choices first, so every layer "
    'shape is timed afresh (pga_jax.conv_forms).',
  )
  _define_train_step_flags()
  _define_layer_flags()


def _define_train_step_flags():
  """The flags of the default mode, which times the config's train step."""
  flags.DEFINE_integer(
    'at_step',
    None,
    'Step number the state starts at (default: '
    'config.init_steps + 1, i.e. after the warm-up, every term on).',
  )
  flags.DEFINE_bool('ae_ratio', True, 'Also time the AE step of the same architecture.')
  flags.DEFINE_string(
    'peer_command',
    None,
    'External command run between our timing '
    'rounds; placeholders {method} {batch} {steps}; its last output line '
    'must be a JSON object {method: images_per_sec}.',
  )
  flags.DEFINE_integer('peer_rounds', 3, 'Rounds of peer / ours with --peer_command.')
  flags.DEFINE_integer('peer_steps', 10, 'The {steps} passed to the peer command.')


def _define_layer_flags():
  """--decoder_only and --layers, the modes that time layers outside a train step,
  and their flags."""
  flags.DEFINE_bool(
    'decoder_only',
    False,
    'Time the decoder alone: lax.conv_transpose '
    '(flax ConvTranspose) vs the phase-decomposed UpConv.',
  )
  flags.DEFINE_bool(
    'layers',
    False,
    "Profile conv_mnist's layers (forward, weight and "
    'input gradients) against a large matmul, the peak FLOP/s.',
  )
  flags.DEFINE_string('arch', 'conv_mnist', 'Architecture for --decoder_only.')
  flags.DEFINE_integer('batch_size', 64, 'Batch size for --decoder_only and --layers.')
  flags.DEFINE_integer('latent_dim', 12, 'Latent size for --decoder_only.')


def main(argv):
  del argv
  from pga_jax import benchmark, config as config_lib  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  log = lambda s: print(f'pga: {s}', file=sys.stderr, flush=True)
  if f.remeasure:
    from pga_jax import conv_forms  # pylint: disable=g-import-not-at-top

    dropped = conv_forms.forget()
    log(
      f'forgot {dropped} cached convolution choices of this device '
      f'({conv_forms.cache_path()}); measuring afresh'
    )
  if f.layers:
    result = benchmark.layer_profile(f.batch_size, steps=f.steps)
    print(benchmark.format_layer_profile(result))
  elif f.decoder_only:
    try:
      result = benchmark.decoder_benchmark(
        f.arch, f.batch_size, f.latent_dim, steps=f.steps, warmup=f.warmup
      )
    except ValueError as err:
      common.user_error(err)
    print(benchmark.format_decoder_result(result))
  else:
    if f.config is None:
      common.user_error(ValueError('--config is required (or pass --decoder_only)'))
    try:
      result = benchmark.benchmark_config(
        f.config,
        steps=f.steps,
        warmup=f.warmup,
        at_step=f.at_step,
        ae_ratio=f.ae_ratio,
        peer_command=f.peer_command,
        peer_rounds=f.peer_rounds,
        peer_steps=f.peer_steps,
        log=log,
      )
    except (config_lib.ConfigError, ValueError, RuntimeError) as err:
      common.user_error(err)
    print(benchmark.format_result(result))
  if f.json:
    benchmark.write_json(result, f.json)
    print(f'pga: wrote {f.json}')
  else:
    print(json.dumps({k: v for k, v in result.items() if k != 'environment'}, sort_keys=True))
