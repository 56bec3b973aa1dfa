"""Fused implementations of built-in methods' terms that share a decoder pass.

The reference definitions are the per-term functions in `pga_jax.terms`;
`methods.method_loss(..., fast=True)` uses these instead where a method
names one (`Method.fused`), and tests/test_fast_paths.py checks that values
and gradients equal the plain term sum up to float32 rounding.

What is shared. L_r decodes the data encoding z = f(x) with gradients to the
decoder and, through z, to the encoder. LPGA's Eq. 6 (and VPGA's vrec) also
decode z (there `stop_gradient(z)`): the same forward values, but their
gradient must reach the decoder's parameters only. Autodiff runs two
backward passes through the decoder for these two uses. `decode_shared`
runs the forward once and one backward pass with the summed cotangent for
the decoder's parameters, plus the input-gradient chain of L_r's cotangent
alone for z: 4 decoder passes instead of 5 (about 5% of an LPGA or VPGA
step on conv_mnist).

A fused function has the signature

    fused(model, params, images, rng_of, config, names) -> {name: value}

with `rng_of(name)` the term's key (`methods.term_rng`) and `names` the
active terms it may compute; it returns values for a subset of them, with
the gradient routing of `terms` (each term's `updates`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pga_jax import losses

sg = jax.lax.stop_gradient


def decode_shared(model, decoder_params, latents):
  """(g(z), g(z)): the first output's gradients reach the decoder and z, the
  second's only the decoder, as `model.decode(decoder_params, stop_gradient(z))`.

  One forward pass; backward: the decoder parameters' gradient from one pass
  with the summed cotangents, z's from the input-gradient chain of the first
  output's cotangent (the parameter gradients of that chain are dead code).
  """

  @jax.custom_vjp
  def both(dec, z):
    x = model.decode(dec, z)
    return x, x

  def forward(dec, z):
    x, vjp = jax.vjp(model.decode, dec, z)
    return (x, x), vjp

  def backward(vjp, cotangents):
    live, params_only = cotangents
    d_dec, _ = vjp(live + params_only)
    _, d_z = vjp(live)
    return d_dec, d_z

  both.defvjp(forward, backward)
  return both(decoder_params, latents)


def _h_frozen_encoder(model, params):
  """h with the encoder's weights held constant (Eq. 6, vrec)."""
  return lambda z: model.encode(sg(params['encoder']), model.decode(params['decoder'], z)).mean


def lpga_reconstruction_and_nll(model, params, images, rng_of, config, names):
  """L_r and Eq. 6 (`terms.reconstruction`, `terms.nll_decoder`) sharing g(z)."""
  if 'rec' not in names or 'nll_dec' not in names:
    return {}
  z = model.encode(params['encoder'], images).mean
  x_rec, x_center = decode_shared(model, params['decoder'], z)
  latents = sg(z)
  shape = (config.num_perturbations,) + latents.shape
  perturbations = losses.sample_sphere(rng_of('nll_dec'), shape,
                                       losses.sphere_radius(model.latent_dim))
  h_center = model.encode(sg(params['encoder']), x_center).mean
  log_dets = losses.log_det_estimates(_h_frozen_encoder(model, params), latents,
                                      perturbations, h_center=h_center)
  return {'rec': losses.reconstruction_loss(x_rec, images),
          'nll_dec': losses.decoder_nll(log_dets, model.latent_dim)}


def variational_reconstruction_shared(model, params, images, rng_of, config, names):
  """L_r, vrec and (LVPGA) the Gaussian Eq. 6 (`terms.reconstruction`,
  `terms.variational_reconstruction`, `terms.nll_decoder_gaussian`) sharing
  g(mu) and h(stop_gradient(mu))."""
  if 'rec' not in names or 'vrec' not in names:
    return {}
  encoding = model.encode(params['encoder'], images)
  x_rec, x_center = decode_shared(model, params['decoder'], encoding.mean)
  mean = sg(encoding.mean)
  h = _h_frozen_encoder(model, params)
  h_mean = model.encode(sg(params['encoder']), x_center).mean
  noise = jnp.exp(0.5 * encoding.logvar) * jax.random.normal(rng_of('vrec'), mean.shape)
  scale = sg(losses.per_dimension_rms(mean))
  out = {'rec': losses.reconstruction_loss(x_rec, images),
         'vrec': losses.variational_latent_reconstruction(h_mean, h(mean + noise), scale)}
  if 'nll_dec' in names:
    sigma = sg(jnp.exp(0.5 * encoding.logvar))
    shape = (config.num_perturbations,) + mean.shape
    perturbations = (sigma[None] + 1e-2) * jax.random.normal(rng_of('nll_dec'), shape)
    log_dets = losses.log_det_estimates(h, mean, perturbations, h_center=h_mean)
    out['nll_dec'] = losses.decoder_nll(log_dets, model.latent_dim)
  return out
