"""LPGA (Eq. 7) on mnist: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/mnist_lpga.py --workdir=runs/mnist_lpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('mnist', 'lpga')
  return config
