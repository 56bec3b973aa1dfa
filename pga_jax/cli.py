"""The `pga` command. Each subcommand is a module in `pga_jax.commands` with
`define_flags()` and `main(argv)`; adding a subcommand is adding a module and
its name here.

  pga train --config=experiments/configs/quickstart.py --workdir=runs/qs [--config.FIELD=VALUE]
  pga sample --workdir=runs/qs --num=100 --out=samples.png   (or .npz)
  pga reconstruct --workdir=runs/qs --num=50 --out=recons.png
  pga interpolate --workdir=runs/qs --num=10 --out=interp.png
  pga evaluate --workdir=runs/qs --num_samples=10000 --features=domain|inception [--json=PATH]
  pga train_classifier --dataset=fashion_mnist   (the domain features of `pga evaluate`)

Every subcommand has --help.
"""
from __future__ import annotations

import importlib
import os
import sys

from absl import app, logging

from pga_jax import storage

COMMANDS = ('train', 'sample', 'reconstruct', 'interpolate', 'evaluate', 'train_classifier', 'benchmark')


class _QuietLibraries:
  """absl log filter: INFO lines only from pga_jax and clu's metric writers.

  orbax and tfds log every file they touch at INFO; warnings still pass,
  except gcsfs's (it logs each failed request with a traceback; the failure
  reaches pga_jax as an exception and is reported in one line).
  """

  def filter(self, record) -> bool:
    path = record.pathname.replace(os.sep, '/')
    if '/gcsfs/' in path:  # its failures reach pga_jax as exceptions, told in one line
      return False
    if record.levelno >= 30:
      return True
    return '/pga_jax/' in path or '/clu/' in path


def run():
  """Console-script entry point."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    print(f'\nusage: pga {{{",".join(COMMANDS)}}} [--help] [flags]', file=sys.stderr)
    sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ('-h', '--help') else 2)
  command = sys.argv[1]
  storage.configure_environment()  # before fsspec, etils or TensorStore read it
  module = importlib.import_module(f'pga_jax.commands.{command}')
  module.define_flags()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(module.main, argv=[f'pga {command}'] + sys.argv[2:])


if __name__ == '__main__':
  run()
