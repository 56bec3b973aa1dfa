"""the VAE baseline on mnist: the reference's published settings (Table 1).

The VAE uses the same encoder/decoder as PGA on this dataset, Adam (lr 2e-4,
beta1 0.5) as the reference VAE. The paper does not state its beta; this is
the reference VAE's value (0.1 MNIST, 0.05 CelebA; 0.05 for CIFAR-10 by analogy).
Run: pga train --config=experiments/configs/mnist_vae.py --workdir=runs/mnist_vae
"""

from pga_jax import config as config_lib


def get_config():
  config = config_lib.paper_config('mnist', 'vae')
  config.beta = 0.1
  return config
