"""Fault injection: loss terms that go non-finite, for reliability drills and tests.

Each is a term function (see `pga_jax.terms`) to add through
`config.extra_terms`. A term whose coefficient is exactly 0 is not computed at
all, and coefficients other than the paper's are not structural fields, so a
run can carry an inert fault term and switch it on when resumed:

    config.fault = 0.0
    config.extra_terms = ({'name': 'collapse', 'coeff': 'fault', 'updates': 'decoder',
                           'fn': 'pga_jax.faults:collapsed_decoder_nll'},)

    pga train --config=... --workdir=w                     # trains normally
    pga train --config=... --workdir=w --config.fault=1    # every step is non-finite:
    # none is applied, and after max_bad_steps the run stops naming 'collapse'.
"""

from __future__ import annotations

import jax

from pga_jax import terms


def collapsed_decoder_nll(model, params, images, rng, config):
  """Eq. 6 (L_nll^theta) as if the decoder had collapsed to a constant map.

  The decoder's parameters are scaled by 0, so h(z) = f(g(z)) is constant,
  h(z + eps) - h(z) = 0 and the log of Eq. 6 is -inf; its gradient is NaN.
  """
  collapsed = {
    'encoder': params['encoder'],
    'decoder': jax.tree_util.tree_map(lambda p: p * 0.0, params['decoder']),
  }
  return terms.nll_decoder(model, collapsed, images, rng, config)
