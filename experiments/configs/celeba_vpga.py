"""VPGA (Eq. 11) on celeba: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/celeba_vpga.py --workdir=runs/celeba_vpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('celeba', 'vpga', epochs=60)
  config.latent_dim = 128
  config.zn_rec = 0.03
  config.zh_rec = 0.01
  config.vkld = 0.002
  return config
