"""Loss terms: the paper's equations run through the encoder and decoder.

Every term has the same signature,

    term(model, params, images, rng, config) -> scalar

where `params` has already been routed by `pga_jax.methods.route` (the
parameter subtrees the term must not update are wrapped in `stop_gradient`).
Inside a term, further stop-gradients implement what the reference does
within one term (e.g. VPGA's encoder weights inside h). A researcher adds a
term by writing one function with this signature (see the README).

Each call of a network is one batch with its own batch-norm statistics
(see `pga_jax.models.layers.BatchNorm`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pga_jax import losses, sharding
from pga_jax.models import AutoEncoder

sg = jax.lax.stop_gradient


def _h(model: AutoEncoder, params: dict):
  """h(z) = f(g(z)) as a function of z only."""
  return lambda latents: model.encode_decode(params, latents)


def _data_latents(model: AutoEncoder, params: dict, images: jax.Array) -> jax.Array:
  return model.encode(params['encoder'], images).mean


def reconstruction(model, params, images, rng, config):
  """L_r, Eq. (1): x_hat = g(f(x)); with a posterior, g decodes the mean."""
  del rng, config
  latents = _data_latents(model, params, images)
  return losses.reconstruction_loss(model.decode(params['decoder'], latents), images)


def latent_reconstruction_prior(model, params, images, rng, config):
  """L_lr,N, Eq. (2): z ~ N(0, I), mean((h(z) - z)^2)."""
  del config
  # Split over devices like the batch: else h(prior) runs in full on every device.
  prior = sharding.shard_rows(jax.random.normal(rng, (images.shape[0], model.latent_dim)))
  return losses.latent_reconstruction_loss(_h(model, params)(prior), prior)


def latent_reconstruction_data(model, params, images, rng, config):
  """L_lr,H, Eq. (3): z = stop_gradient(f(x)), mean((h(z) - z)^2)."""
  del rng, config
  latents = sg(_data_latents(model, params, images))
  return losses.latent_reconstruction_loss(_h(model, params)(latents), latents)


def nll_encoder(model, params, images, rng, config):
  """L_nll^phi, Eq. (5): -log N(f(x); 0, I) / H."""
  del rng, config
  return losses.encoder_nll(_data_latents(model, params, images))


def nll_decoder(model, params, images, rng, config):
  """L_nll^theta, Eq. (6): log-det estimate with K perturbations on S(eps).

  z = stop_gradient(f(x)); eps = 1e-2 * sqrt(H); K = config.num_perturbations.
  """
  latents = sg(_data_latents(model, params, images))
  shape = (config.num_perturbations,) + latents.shape
  perturbations = losses.sample_sphere(rng, shape, losses.sphere_radius(model.latent_dim))
  log_dets = losses.log_det_estimates(_h(model, params), latents, perturbations)
  return losses.decoder_nll(log_dets, model.latent_dim)


def nll_decoder_gaussian(model, params, images, rng, config):
  """LVPGA's variant of Eq. (6): perturbations (sigma(x) + 1e-2) * n, n ~ N(0, I).

  The denominator of Eq. 6 becomes each perturbation's own squared norm. The
  encoder's weights inside h get no gradient from this term (the reference's
  routing), and sigma is held constant.
  """
  encoding = model.encode(params['encoder'], images)
  latents, sigma = sg(encoding.mean), sg(jnp.exp(0.5 * encoding.logvar))
  shape = (config.num_perturbations,) + latents.shape
  perturbations = (sigma[None] + 1e-2) * jax.random.normal(rng, shape)
  h = _h(model, {'encoder': sg(params['encoder']), 'decoder': params['decoder']})
  log_dets = losses.log_det_estimates(h, latents, perturbations)
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
  h = _h(model, {'encoder': sg(params['encoder']), 'decoder': params['decoder']})
  scale = sg(losses.per_dimension_rms(mean))
  return losses.variational_latent_reconstruction(h(mean), h(mean + noise), scale)


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
