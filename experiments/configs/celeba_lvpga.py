"""LVPGA (the reference code's hybrid) on celeba: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/celeba_lvpga.py --workdir=runs/celeba_lvpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('celeba', 'lvpga')
  config.latent_dim = 128
  config.zn_rec = 0.03
  config.zh_rec = 0.01
  config.vrec = 0.01
  config.vkld = 0.005
  config.nll = 0.01
  return config
