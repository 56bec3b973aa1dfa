"""LPGA (Eq. 7) on celeba: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/celeba_lpga.py --workdir=runs/celeba_lpga
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('celeba', 'lpga')
  config.latent_dim = 128
  config.zn_rec = 0.03
  config.zh_rec = 0.01
  config.nll = 0.01
  return config
