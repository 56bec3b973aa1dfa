"""The paper's loss terms as pure functions on arrays.

Scales follow the authors' reference implementation (see
`docs/reference_code.md`, "Loss scale"), which is what the
published coefficients assume:
- squared errors are means over all elements (batch and pixels / latent
  dims), and the paper's 1/2 factors are not applied;
- the NLL terms (Eqs. 5 and 6) are divided by the latent size H.

Which parameters each term may update, and the networks it runs through, are
decided in `pga_jax.terms`; this module is only the maths.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp


def reconstruction_loss(reconstructions: jax.Array, images: jax.Array) -> jax.Array:
  """L_r, Eq. (1): mean((x_hat - x)^2) over batch and pixels."""
  chex.assert_equal_shape([reconstructions, images])
  return jnp.mean(jnp.square(reconstructions - images))


def latent_reconstruction_loss(latents_rec: jax.Array, latents: jax.Array) -> jax.Array:
  """L_lr,N (Eq. 2) and L_lr,H (Eq. 3): mean((h(z) - z)^2) over batch and dims.

  Eq. 2 when `latents` are prior draws z ~ N(0, I); Eq. 3 when they are
  (stop-gradient) encodings of data, z ~ H.
  """
  chex.assert_equal_shape([latents_rec, latents])
  return jnp.mean(jnp.square(latents_rec - latents))


def encoder_nll(latents: jax.Array) -> jax.Array:
  """L_nll^phi, Eq. (5): -mean_x log N(f(x); 0, I), divided by H.

  Includes the constant H/2 log(2 pi) so the value is a true negative
  log-density per latent dimension.
  """
  chex.assert_rank(latents, 2)
  dim = latents.shape[-1]
  log_density = -0.5 * jnp.sum(jnp.square(latents), axis=-1) - 0.5 * dim * math.log(2 * math.pi)
  return -jnp.mean(log_density) / dim


def sample_sphere(rng: jax.Array, shape: tuple, radius: float) -> jax.Array:
  """Uniform draws on the sphere of `radius` in R^shape[-1] (S(eps) in Eq. 6)."""
  directions = jax.random.normal(rng, shape)
  norms = jnp.linalg.norm(directions, axis=-1, keepdims=True)
  return radius * directions / norms


def sphere_radius(latent_dim: int) -> float:
  """The reference's eps = 1e-2 * sqrt(H)."""
  return 1e-2 * math.sqrt(latent_dim)


def log_squared_norm(x: jax.Array) -> jax.Array:
  """log(||x||^2) over the last axis, in a form whose squares cannot underflow.

  Equal to `log(sum(x**2))` wherever that is finite and its squares are
  normal float32 numbers (values and gradients, up to rounding), but scaled
  by the largest |x_i| first: 2 log m + log(sum((x / m)^2)), m held constant.
  Differences of ~1e-19 (squares below float32's ~1e-38, flushed to 0 on
  most backends) keep a finite logarithm; only an exactly zero x gives -inf.
  """
  m = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
  safe = jnp.where(m > 0, m, 1.0)
  return 2.0 * jnp.log(safe[..., 0]) + jnp.log(jnp.sum(jnp.square(x / safe), axis=-1))


def log_det_estimates(
  h: Callable[[jax.Array], jax.Array],
  latents: jax.Array,
  perturbations: jax.Array,
  h_center: Optional[jax.Array] = None,
) -> jax.Array:
  """Per-sample estimate of log|det dh/dz| from Eq. (6).

    H/2 * mean_k log(||h(z + d_k) - h(z)||^2 / ||d_k||^2)

  `perturbations` has shape (K, N, H): K perturbations per latent. The K
  perturbed batches go through `h` with `jax.vmap`, so each is one batch (its
  own batch-norm statistics, like the reference's single perturbed batch);
  K = 1 reproduces the reference. The denominator ||d_k|| is a constant, as
  in the reference (eps for LPGA, `stop_gradient(||delta||)` for LVPGA); the
  perturbations themselves are not (LVPGA's depend on sigma). As eps -> 0 the
  expectation over the sphere is an upper bound of log|det| (Jensen on the
  concave log), tight when the Jacobian is a scaled orthogonal matrix.
  Returns shape (N,).

  `h_center`: h(latents) if the caller already has it (it must be that value).
  """
  chex.assert_rank(latents, 2)
  chex.assert_rank(perturbations, 3)
  chex.assert_equal(perturbations.shape[1:], latents.shape)
  dim = latents.shape[-1]
  if h_center is None:
    h_center = h(latents)
  chex.assert_equal_shape([h_center, latents])
  h_perturbed = jax.vmap(h)(latents[None] + perturbations)
  log_out_sq = log_squared_norm(h_perturbed - h_center[None])
  log_in_sq = jax.lax.stop_gradient(log_squared_norm(perturbations))
  return 0.5 * dim * jnp.mean(log_out_sq - log_in_sq, axis=0)


def decoder_nll(log_dets: jax.Array, latent_dim: int) -> jax.Array:
  """L_nll^theta, Eq. (6), at the reference's scale: mean log-det estimate / H."""
  chex.assert_rank(log_dets, 1)
  return jnp.mean(log_dets) / latent_dim


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(q(z|x) || N(0, I)) of Eqs. (8)-(10), averaged over batch and dims."""
  chex.assert_equal_shape([mean, logvar])
  return jnp.mean(-0.5 * (1.0 + logvar - jnp.square(mean) - jnp.exp(logvar)))


def variational_latent_reconstruction(
  h_mean: jax.Array, h_noisy: jax.Array, scale: jax.Array
) -> jax.Array:
  """The reconstruction part of L_vae, Eq. (10), as the reference implements it.

  -log p(z_hat | z) with p Gaussian around h(z) becomes a squared error
  between h(mu) and h(mu + sigma * n), each dimension divided by `scale` (the
  per-dimension RMS of mu over the batch, held constant by the caller).
  """
  chex.assert_equal_shape([h_mean, h_noisy])
  return jnp.mean(jnp.square((h_mean - h_noisy) / scale))


def per_dimension_rms(latents: jax.Array) -> jax.Array:
  """RMS of each latent dimension over the batch (the vrec scale s)."""
  return jnp.sqrt(jnp.mean(jnp.square(latents), axis=0))


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mu + exp(logvar / 2) * n, n ~ N(0, I)."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def vae_loss(
  reconstructions: jax.Array, images: jax.Array, mean: jax.Array, logvar: jax.Array, beta: float
) -> jax.Array:
  """The VAE baseline's loss: mean((x_rec - x)^2) + beta * mean KL (Eq. 8, negated).

  `reconstructions` decode z = mu + sigma * n.
  """
  return reconstruction_loss(reconstructions, images) + beta * gaussian_kl(mean, logvar)
