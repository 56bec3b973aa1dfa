"""An encoder f and a decoder g as one value with pure init/encode/decode.

Parameters are a plain pytree `{'encoder': ..., 'decoder': ...}`; every
method takes the subtree it needs, so losses can stop gradients on one side
(`pga_jax.methods.route`) without filtering gradients by name.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from pga_jax import conv_forms
from pga_jax.models import dcgan, resnet

ARCHITECTURES = {
  # name: native image size (networks: dcgan.py, resnet.py; built by the methods below)
  'conv_mnist': 28,
  'conv_tiny': 28,  # not the paper's: conv_mnist at 1/8 of its widths (dcgan.CONV_TINY)
  'conv_32': 32,
  'conv_64': 64,
  'resnet_32': 32,
}


class Encoding(NamedTuple):
  """Encoder output: latent mean (= f(x)) and log(sigma^2), or None."""

  mean: jax.Array
  logvar: Optional[jax.Array]


@dataclasses.dataclass(frozen=True)
class AutoEncoder:
  """Encoder f: images (N, S, S, C) in [-1, 1] -> latents (N, H); decoder g back.

  `with_logvar` adds the log-variance head that VPGA, LVPGA and the VAE need.
  `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32.
  `conv_impl` picks how the strided and transposed convolutions and their
  backward passes are computed (`conv_forms.forms.layer_forms`; every form is exact):
  'auto' (default) the form measured fastest per layer shape on this backend
  and device (cached, `pga_jax.conv_forms.choice`; may be a custom VJP,
  reverse mode only), 'xla' XLA's own convolutions and JAX's autodiff
  everywhere (`jax.jvp` / `jacfwd` work), 'phase' / 'adjoint' force those
  forms.
  """

  arch: str
  latent_dim: int
  channels: int
  use_bn: bool = False
  with_logvar: bool = False
  dtype: Optional[jnp.dtype] = None
  conv_impl: str = 'auto'

  def __post_init__(self):
    if self.arch not in ARCHITECTURES:
      raise ValueError(f'unknown arch {self.arch!r}; choose one of {sorted(ARCHITECTURES)}')
    if self.conv_impl not in conv_forms.CONV_IMPLS:
      raise ValueError(
        f'unknown conv_impl {self.conv_impl!r}; choose one of {conv_forms.CONV_IMPLS}'
      )

  @property
  def image_size(self) -> int:
    return ARCHITECTURES[self.arch]

  @property
  def image_shape(self) -> tuple:
    return (self.image_size, self.image_size, self.channels)

  @property
  def encoder(self) -> nn.Module:
    if self.arch == 'resnet_32':
      return resnet.ResnetEncoder(self.latent_dim, self.use_bn, self.with_logvar, dtype=self.dtype)
    spec, dim = self._dcgan_spec()
    return dcgan.DcganEncoder(
      spec,
      self.latent_dim,
      self.use_bn,
      self.with_logvar,
      dim=dim,
      dtype=self.dtype,
      conv_impl=self.conv_impl,
    )

  @property
  def decoder(self) -> nn.Module:
    if self.arch == 'resnet_32':
      return resnet.ResnetDecoder(self.channels, self.use_bn, dtype=self.dtype)
    spec, dim = self._dcgan_spec()
    return dcgan.DcganDecoder(
      spec, self.channels, self.use_bn, dim=dim, dtype=self.dtype, conv_impl=self.conv_impl
    )

  def _dcgan_spec(self) -> tuple:
    """(layer spec, filters of the first layer) of a DCGAN-style `arch`."""
    return {
      'conv_mnist': (dcgan.CONV_MNIST, 64),
      'conv_tiny': (dcgan.CONV_TINY, dcgan.CONV_TINY_DIM),
      'conv_32': (dcgan.CONV_32, 64),
      'conv_64': (dcgan.CONV_64, 64),
    }[self.arch]

  def init(self, rng: jax.Array) -> dict:
    """Glorot-uniform weights, zero biases (log-variance bias 2*log(0.1))."""
    enc_rng, dec_rng = jax.random.split(rng)
    x = jnp.zeros((2,) + self.image_shape, jnp.float32)
    z = jnp.zeros((2, self.latent_dim), jnp.float32)
    # The convolution form does not change the parameters: initialise with
    # XLA's own, so 'auto' measures nothing for this throwaway batch of 2.
    plain = dataclasses.replace(self, conv_impl='xla')
    return {
      'encoder': plain.encoder.init(enc_rng, x)['params'],
      'decoder': plain.decoder.init(dec_rng, z)['params'],
    }

  def encode(self, encoder_params, images: jax.Array, stat_rows: Optional[int] = None) -> Encoding:
    """f(x). Batch norm (if on) uses this batch's statistics (see layers.BatchNorm)."""
    chex.assert_rank(images, 4)
    chex.assert_equal(images.shape[1:], self.image_shape)
    mean, logvar = self.encoder.apply({'params': encoder_params}, images, stat_rows)
    chex.assert_shape(mean, (images.shape[0], self.latent_dim))
    return Encoding(mean, logvar)

  def decode(
    self, decoder_params, latents: jax.Array, stat_rows: Optional[int] = None
  ) -> jax.Array:
    """g(z): images in [-1, 1]."""
    chex.assert_shape(latents, (None, self.latent_dim))
    images = self.decoder.apply({'params': decoder_params}, latents, stat_rows)
    chex.assert_shape(images, (latents.shape[0],) + self.image_shape)
    return images

  def encode_decode(self, params, latents: jax.Array) -> jax.Array:
    """h(z) = f(g(z)), the perceptual generative model (Sec. 2.1)."""
    return self.encode(params['encoder'], self.decode(params['decoder'], latents)).mean

  def encode_decode_frozen_encoder(self, params, latents: jax.Array) -> jax.Array:
    """h(z) with the encoder's weights held constant: gradients reach the
    decoder's weights and `latents` only (h inside Eq. 6 and VPGA's vrec; the
    reference's `no_enc_grad`)."""
    frozen = jax.tree_util.tree_map(jax.lax.stop_gradient, params['encoder'])
    return self.encode(frozen, self.decode(params['decoder'], latents)).mean

  def reconstruct(self, params, images: jax.Array) -> jax.Array:
    """g(f(x)), decoding the mean when the encoder has a posterior (Eq. 1)."""
    return self.decode(params['decoder'], self.encode(params['encoder'], images).mean)

  def encode_decode_at_codes(self, params, images: jax.Array) -> jax.Array:
    """h(stop_gradient(f(x))) with the encoder's weights held constant: the
    centre of Eq. 6's perturbations and of VPGA's vrec."""
    codes = jax.lax.stop_gradient(self.encode(params['encoder'], images).mean)
    return self.encode_decode_frozen_encoder(params, codes)

  def decode_with_reference(
    self, decoder_params, latents: jax.Array, reference_latents: jax.Array
  ) -> jax.Array:
    """g(z) with batch-norm statistics taken from `reference_latents` only.

    Makes a sample independent of the other samples it is drawn with (and so
    of the sample batch size): used for figures, sampling and evaluation.
    Without batch norm this equals `decode`.
    """
    if not self.use_bn:
      return self.decode(decoder_params, latents)
    rows = reference_latents.shape[0]
    both = jnp.concatenate([reference_latents, latents], axis=0)
    return self.decode(decoder_params, both, stat_rows=rows)[rows:]

  def encode_with_reference(
    self, encoder_params, images: jax.Array, reference_images: jax.Array
  ) -> Encoding:
    """f(x) with batch-norm statistics from `reference_images` only."""
    if not self.use_bn:
      return self.encode(encoder_params, images)
    rows = reference_images.shape[0]
    both = jnp.concatenate([reference_images, images], axis=0)
    out = self.encode(encoder_params, both, stat_rows=rows)
    return Encoding(out.mean[rows:], None if out.logvar is None else out.logvar[rows:])


def param_count(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
