"""Exact quantities that Eq. (6) only estimates, for small latent sizes."""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from pga_jax.models import AutoEncoder


def exact_log_det(h: Callable[[jax.Array], jax.Array], latents: jax.Array) -> jax.Array:
  """log|det dh/dz| at each row of `latents` (N, H), by jax.jacrev + slogdet.

  `h` maps a single latent (H,) to (H,). Costs H reverse-mode passes per
  sample: meant for diagnostics with small H, not for training. Reverse
  mode because the decoder's fast upsampling defines only a VJP
  (`pga_jax.conv_forms.upsample_conv`).
  """
  chex.assert_rank(latents, 2)
  jacobians = jax.vmap(jax.jacrev(h))(latents)
  return jnp.linalg.slogdet(jacobians)[1]


def model_exact_log_det(
  model: AutoEncoder, params: dict, latents: jax.Array, reference_latents: jax.Array
) -> jax.Array:
  """Exact log|det dh/dz| of h = f o g at `latents`, per sample.

  With batch norm, h of one latent depends on the batch it is in; here the
  statistics come from `reference_latents` (held fixed), so this is the
  Jacobian of the network as it acts on a single sample. Without batch norm
  the reference batch has no effect.
  """

  def h_single(z):
    images = model.decode_with_reference(params['decoder'], z[None], reference_latents)
    reference_images = model.decode(params['decoder'], reference_latents)
    return model.encode_with_reference(params['encoder'], images, reference_images).mean[0]

  return exact_log_det(h_single, latents)
