"""The VAE on celeba with the public TensorFlow VAE's optimizer: Adam, lr 2e-4, beta1 0.5.

Not the paper's baseline (that is celeba_vae.py, SGD with momentum 0.9): the
recipe of the public VAE repository the reference code builds on, kept as a
second baseline. Adam moves much faster than SGD early in training, so at
short budgets it is the stronger of the two. Everything else is celeba_vae.py's.
Run: pga train --config=experiments/configs/celeba_vae_adam.py --workdir=runs/celeba_vae_adam
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('celeba', 'vae')
  config.latent_dim = 128
  config.beta = 0.05
  return config_lib.public_vae_adam(config)
