"""A method in one file: a Wasserstein autoencoder with an MMD penalty (WAE-MMD).

    L = L_r + mmd * MMD(f(x), z),   z ~ N(0, I)

MMD with the inverse multiquadratic kernel k(a, b) = C / (C + ||a - b||^2),
C = 2 * H (H the latent size), over the batch's codes and as many prior
draws (the unbiased estimate). The MMD reaches only the encoder; L_r both
networks. `WAE_MMD` declares the method: its terms, and its defaults
(latent size, and `mmd`, a coefficient field only this method has).

This file is also a config file:

    pga train --config=experiments/extending/wae_mmd.py --workdir=runs/wae
    pga train --config=experiments/extending/wae_mmd.py --workdir=runs/wae --config.mmd=3

and any other config can switch to the method:
`--config.method=experiments.extending.wae_mmd:WAE_MMD`.
tests/test_extending.py checks its routing and gradients and trains it for
20 steps.
"""

import os

import jax
import jax.numpy as jnp

from pga_jax import config as config_lib, methods, terms


def _imq_kernel(a, b):
  scale = 2.0 * a.shape[-1]
  squared = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
  return scale / (scale + squared)


def mmd(codes, prior):
  """Unbiased MMD^2 between two samples of equal size n (rows), IMQ kernel."""
  n = codes.shape[0]
  off_diagonal = 1.0 - jnp.eye(n)
  within = (_imq_kernel(codes, codes) + _imq_kernel(prior, prior)) * off_diagonal
  return jnp.sum(within) / (n * (n - 1)) - 2.0 * jnp.mean(_imq_kernel(codes, prior))


def mmd_to_prior(model, params, images, rng, config):
  """MMD between the codes f(x) of the batch and as many draws from N(0, I)."""
  del config
  codes = model.encode(params['encoder'], images).mean
  return mmd(codes, jax.random.normal(rng, codes.shape))


WAE_MMD = methods.Method(
  'wae_mmd',
  (
    methods.Term('rec', terms.reconstruction, 'both', warmup=False),
    methods.Term('mmd', mmd_to_prior, 'encoder', 'mmd', warmup=False),
  ),
  defaults=dict(latent_dim=8, mmd=10.0),
  doc='WAE-MMD: an autoencoder whose codes are pulled to the prior by an MMD',
)


def get_config():
  """Fashion-MNIST, conv_mnist, SGD as the paper's other methods; a short run."""
  # Named by this file's plain module name, found next to the config file.
  config = config_lib.base_config(
    'wae_mmd:WAE_MMD', code_dir=os.path.dirname(os.path.abspath(__file__))
  )
  config.dataset = 'fashion_mnist'
  config.num_steps = 3000
  config.eval_every = 0
  config.sample_every = 500
  return config
