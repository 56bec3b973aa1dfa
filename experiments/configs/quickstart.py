"""Quickstart: LPGA on Fashion-MNIST, sized for ~10 minutes on a 2-core CPU.

The reference's MNIST settings (conv_mnist, z 12, SGD lr 0.1 momentum 0.9,
zn_rec 6e-2, nll 1.5e-2) with a shorter warm-up and step budget. After the
short warm-up the terms are ramped in over 500 steps instead of switched on
at once (`warmup_ramp_steps`, not the reference's): on digit-like images the
reference's switch diverges after a 500-step warm-up (docs/switch_on.md).

Run: pga train --config=experiments/configs/quickstart.py --workdir=runs/quickstart
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.base_config('lpga')
  config.dataset = 'fashion_mnist'
  config.arch = 'conv_mnist'
  config.num_steps = 1500
  config.init_steps = 500
  config.warmup_ramp_steps = 500
  config.log_every = 50
  config.sample_every = 500
  config.checkpoint_every = 500
  return config
