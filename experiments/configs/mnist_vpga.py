"""VPGA (Eq. 11) on mnist: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/mnist_vpga.py --workdir=runs/mnist_vpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('mnist', 'vpga')
  return config
