"""Generating from a trained model: samples, reconstructions, interpolations.

Batch norm: the decoder normalises with statistics of a fixed *reference
batch* of prior draws (the training batch size, from a key derived from the
run's seed), so a sample depends only on its own latent, never on how many
samples are drawn with it. Reconstructions and interpolations encode the
given images with their own batch statistics, as in training.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pga_jax.models import AutoEncoder

REFERENCE_KEY = 1234


def reference_latents(model: AutoEncoder, batch_size: int, seed: int) -> jax.Array:
  key = jax.random.fold_in(jax.random.PRNGKey(seed), REFERENCE_KEY)
  return jax.random.normal(key, (batch_size, model.latent_dim))


def decode_latents(
  model: AutoEncoder, params, latents: jax.Array, reference: jax.Array, chunk: int = 256
) -> np.ndarray:
  """g(z) for any number of latents, in chunks, batch norm on `reference`."""
  out = [
    np.asarray(_decode(model, params['decoder'], latents[i : i + chunk], reference))
    for i in range(0, latents.shape[0], chunk)
  ]
  return np.concatenate(out, axis=0)


def sample(
  model: AutoEncoder, params, rng: jax.Array, num: int, reference: jax.Array, chunk: int = 256
) -> np.ndarray:
  """`num` images g(z), z ~ N(0, I), in [-1, 1]."""
  latents = jax.random.normal(rng, (num, model.latent_dim))
  return decode_latents(model, params, latents, reference, chunk)


def reconstruct(model: AutoEncoder, params, images: jax.Array) -> np.ndarray:
  """g(f(x)); with a posterior, g decodes the mean (as the reference's figures)."""
  return np.asarray(_reconstruct(model, params, images))


def interpolate(
  model: AutoEncoder, params, images_a: jax.Array, images_b: jax.Array, steps: int = 9
) -> np.ndarray:
  """Decodings of `steps` points on the line between f(a) and f(b), ends included.

  Returns (N, steps, S, S, C).
  """
  return np.asarray(_interpolate(model, params, images_a, images_b, steps))


# Jitted once per (model, shapes): the model is a frozen, hashable dataclass.
@functools.partial(jax.jit, static_argnums=0)
def _decode(model, decoder_params, latents, reference):
  return model.decode_with_reference(decoder_params, latents, reference)


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(model, params, images):
  return model.decode(params['decoder'], model.encode(params['encoder'], images).mean)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _interpolate(model, params, images_a, images_b, steps):
  z = model.encode(params['encoder'], jnp.concatenate([images_a, images_b])).mean
  za, zb = z[: images_a.shape[0]], z[images_a.shape[0] :]
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  path = (1 - t) * za[:, None] + t * zb[:, None]
  x = model.decode(params['decoder'], path.reshape(-1, model.latent_dim))
  return x.reshape((images_a.shape[0], steps) + x.shape[1:])
