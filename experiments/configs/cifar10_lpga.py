"""LPGA (Eq. 7) on cifar10: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/cifar10_lpga.py --workdir=runs/cifar10_lpga
"""
from pga_jax import config as config_lib


def get_config():
  config = config_lib.base_config('lpga')
  config.dataset = 'cifar10'
  config.arch = 'conv_32'
  config.use_bn = True
  config.optimizer.learning_rate = 0.2
  config.num_steps = 400 * 50000 // config.batch_size  # 400 epochs
  config.latent_dim = 128
  config.zn_rec = 0.03
  config.eval_every = 2000  # FID during training, as the reference
  config.eval_features = 'inception'
  return config
