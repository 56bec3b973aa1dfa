"""The paper's VAE baseline on celeba (Table 1): the PGA networks, trained as the paper trains.

Section 3 of the paper: "SGD with a momentum of 0.9 is used to train all
models", the VAE included, with the same encoder and decoder as PGA on this
dataset; here at PGA's learning rate for the dataset (0.4). The paper does not
state the VAE's beta; this is the public VAE's value (0.1 MNIST, 0.05 CelebA;
0.05 for CIFAR-10 by analogy). The public VAE's own optimizer (Adam) is the
variant celeba_vae_adam.py.
Run: pga train --config=experiments/configs/celeba_vae.py --workdir=runs/celeba_vae
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('celeba', 'vae')
  config.latent_dim = 128
  config.beta = 0.05
  return config
