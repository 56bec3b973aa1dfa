"""LVPGA (the reference code's hybrid) on mnist: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/mnist_lvpga.py --workdir=runs/mnist_lvpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('mnist', 'lvpga')
  return config
