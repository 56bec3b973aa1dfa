"""A loss term in one file: L1 reconstruction error, for any method.

    mean |g(f(x)) - x|

the L1 counterpart of the paper's L_r (Eq. 1), routed to both networks and
on from the first step. Switch it on from the command line, with a
coefficient, in any method:

    pga train --config=experiments/configs/quickstart.py --workdir=runs/l1 \\
      --config.extra_terms=experiments.extending.l1_term:L1=0.1

A file in the working directory or next to the config file is found by its
plain name (`--config.extra_terms=l1_term:L1=0.1`); '@encoder' after the name
would route it to the encoder only. tests/test_extending.py checks its
routing and gradients and trains with it for 20 steps.
"""

import jax.numpy as jnp

from pga_jax import methods


def l1_reconstruction(model, params, images, rng, config):
  """mean |g(f(x)) - x| over pixels and batch (f(x): the posterior mean if there is one)."""
  del rng, config
  return jnp.mean(jnp.abs(model.reconstruct(params, images) - images))


L1 = methods.Term('rec_l1', l1_reconstruction, updates='both', warmup=False)
