"""LPGA (Eq. 7) on cifar10: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/cifar10_lpga.py --workdir=runs/cifar10_lpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('cifar10', 'lpga')
  config.latent_dim = 128
  config.zn_rec = 0.03
  return config
