"""Loss terms: the paper's equations run through the encoder and decoder.

Every term has the same signature,

    term(model, params, images, rng, config) -> scalar

where `params` has already been routed by `pga_jax.passes.route` (the
parameter subtrees the term must not update are wrapped in `stop_gradient`).
Inside a term, further stop-gradients implement what the reference does
within one term (e.g. the encoder's weights inside h for Eq. 6 and vrec). A
researcher adds a term by writing one function with this signature (see
docs/extending.md).

`model` is an `AutoEncoder`, or during training a `passes.SharedPasses`
that computes the passes several terms share (f(x), g(f(x)) and the centre
h(stop_gradient(f(x))): `model.encode(params['encoder'], images)`,
`model.reconstruct`, `model.encode_decode_at_codes`) once per step; a term
asks for them through those methods and is written once.

Each call of a network is one batch with its own batch-norm statistics
(see `pga_jax.models.layers.BatchNorm`), as each call in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pga_jax import losses, sharding

sg = jax.lax.stop_gradient


def _codes(model, params, images) -> jax.Array:
  """f(x): the data latents (the posterior mean when there is one)."""
  return model.encode(params['encoder'], images).mean


def reconstruction(model, params, images, rng, config):
  """L_r, Eq. (1): x_hat = g(f(x)); with a posterior, g decodes the mean."""
  del rng, config
  return losses.reconstruction_loss(model.reconstruct(params, images), images)


def latent_reconstruction_prior(model, params, images, rng, config):
  """L_lr,N, Eq. (2): z ~ N(0, I), mean((h(z) - z)^2)."""
  del config
  # Split over devices like the batch: else h(prior) runs in full on every device.
  prior = sharding.shard_rows(jax.random.normal(rng, (images.shape[0], model.latent_dim)))
  return losses.latent_reconstruction_loss(model.encode_decode(params, prior), prior)


def latent_reconstruction_data(model, params, images, rng, config):
  """L_lr,H, Eq. (3): z = stop_gradient(f(x)), mean((h(z) - z)^2)."""
  del rng, config
  latents = sg(_codes(model, params, images))
  return losses.latent_reconstruction_loss(model.encode_decode(params, latents), latents)


def nll_encoder(model, params, images, rng, config):
  """L_nll^phi, Eq. (5): -log N(f(x); 0, I) / H."""
  del rng, config
  return losses.encoder_nll(_codes(model, params, images))


def nll_decoder(model, params, images, rng, config):
  """L_nll^theta, Eq. (6): log-det estimate with K perturbations on S(eps).

  z = stop_gradient(f(x)); eps = 1e-2 * sqrt(H); K = config.num_perturbations;
  the encoder's weights inside h are held constant (LPGA routes this term to
  the decoder only, so this changes nothing there).
  """
  latents = sg(_codes(model, params, images))
  shape = (config.num_perturbations,) + latents.shape
  perturbations = losses.sample_sphere(rng, shape, losses.sphere_radius(model.latent_dim))
  log_dets = losses.log_det_estimates(
    lambda z: model.encode_decode_frozen_encoder(params, z),
    latents,
    perturbations,
    h_center=model.encode_decode_at_codes(params, images),
  )
  return losses.decoder_nll(log_dets, model.latent_dim)


def posterior_log_det(model, params, images, rng, config):
  """LVPGA's `vrec` (the reference's `train_lvpga.py`): Eq. (6) with Gaussian
  perturbations from the posterior.

    delta = n * (sigma(x) + 1e-2),  n ~ N(0, I)   (K = config.num_perturbations)
    value = mean_x H/2 log(||h(z + delta) - h(z)||^2 / ||delta||^2) / H

  z = stop_gradient(mu); the encoder's weights inside h are held constant
  and ||delta|| is a constant, but sigma is not: the encoder's log-variance
  head gets gradient through delta, the decoder through h. The reference
  puts this term, weighted by `vrec`, in both its encoder and decoder loss.
  """
  encoding = model.encode(params['encoder'], images)
  latents = sg(encoding.mean)
  sigma = jnp.exp(0.5 * encoding.logvar)
  noise = jax.random.normal(rng, (config.num_perturbations,) + latents.shape)
  log_dets = losses.log_det_estimates(
    lambda z: model.encode_decode_frozen_encoder(params, z),
    latents,
    noise * (sigma[None] + 1e-2),
    h_center=model.encode_decode_at_codes(params, images),
  )
  return losses.decoder_nll(log_dets, model.latent_dim)


def variational_reconstruction(model, params, images, rng, config):
  """vrec, the reconstruction part of Eq. (10) as the reference implements it.

  h_mu = h(sg(mu)), h_noisy = h(sg(mu) + sigma * n). The encoder weights inside
  h are held constant; gradients reach the decoder and, through the noise,
  sigma. Each dimension is scaled by the (constant) RMS of mu over the batch.
  """
  del config
  encoding = model.encode(params['encoder'], images)
  mean = sg(encoding.mean)
  noise = jnp.exp(0.5 * encoding.logvar) * jax.random.normal(rng, mean.shape)
  scale = sg(losses.per_dimension_rms(mean))
  return losses.variational_latent_reconstruction(
    model.encode_decode_at_codes(params, images),
    model.encode_decode_frozen_encoder(params, mean + noise),
    scale,
  )


def kl_divergence(model, params, images, rng, config):
  """KL(q(z|x) || N(0, I)) of Eqs. (8)-(10), averaged over batch and dims."""
  del rng, config
  encoding = model.encode(params['encoder'], images)
  return losses.gaussian_kl(encoding.mean, encoding.logvar)


def vae_reconstruction(model, params, images, rng, config):
  """The VAE's reconstruction error: g decodes z = mu + sigma * n."""
  del config
  encoding = model.encode(params['encoder'], images)
  latents = losses.reparameterize(rng, encoding.mean, encoding.logvar)
  return losses.reconstruction_loss(model.decode(params['decoder'], latents), images)
