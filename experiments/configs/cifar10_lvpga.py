"""LVPGA (the reference code's hybrid) on cifar10: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/cifar10_lvpga.py --workdir=runs/cifar10_lvpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('cifar10', 'lvpga')
  config.latent_dim = 128
  config.zn_rec = 0.03
  config.vrec = 0.015
  config.vkld = 0.05
  config.nll = 0.02
  return config
