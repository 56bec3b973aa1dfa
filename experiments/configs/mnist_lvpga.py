"""LVPGA (the reference code's hybrid) on mnist: the reference's published settings (Table 1).

Run: pga train --config=experiments/configs/mnist_lvpga.py --workdir=runs/mnist_lvpga
"""
from pga_jax import config as config_lib


def get_config():
  config = config_lib.base_config('lvpga')
  config.dataset = 'mnist'
  config.arch = 'conv_mnist'
  config.use_bn = False
  config.optimizer.learning_rate = 0.1
  config.num_steps = 600 * 60000 // config.batch_size  # 600 epochs
  config.eval_every = 2000  # FID during training, as the reference
  config.eval_features = 'inception'
  return config
