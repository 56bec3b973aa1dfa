"""The reference's DCGAN-style encoders and decoders: conv_mnist, conv_32, conv_64
(and conv_tiny, a narrow conv_mnist that is not the paper's).

NHWC, 5x5 kernels, stride 2, 'SAME' padding, `dim` = 64 filters in the first
layer. Encoders end in a dense layer to the latent mean and, for methods that
need a posterior variance, a second dense head for log(sigma^2) whose bias
starts at 2*log(0.1). Decoders end in `tanh` (images live in [-1, 1]).

Each architecture is described by a small spec (layer widths and where batch
norm goes) so the three stay visibly the same family, exactly as the
reference lists them (`docs/reference_code.md`, "Architectures").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pga_jax.models import layers

LOGVAR_BIAS_INIT = 2.0 * math.log(0.1)


@dataclasses.dataclass(frozen=True)
class DcganSpec:
  """Widths of one conv architecture, in units of `dim`.

  enc_convs / dec_deconvs: (width multiplier, has bn) per stride-2 layer.
  enc_dense: optional hidden dense layer of the encoder (units, has bn).
  dec_dense_hidden: optional first dense layer of the decoder (units, has bn).
  dec_start: spatial size after the decoder's projection; its channel count
  is the first deconv's input width (dim * dec_start_mult), with bn flag.
  """

  enc_convs: tuple
  enc_dense: Optional[tuple]
  dec_dense_hidden: Optional[tuple]
  dec_start: int
  dec_start_mult: int
  dec_start_bn: bool
  dec_deconvs: tuple


CONV_MNIST = DcganSpec(
  enc_convs=((1, False), (2, True)),
  enc_dense=(1024, True),
  dec_dense_hidden=(1024, False),
  dec_start=7,
  dec_start_mult=2,
  dec_start_bn=True,
  dec_deconvs=((1, False),),
)

# Not in the paper: conv_mnist's layers at an eighth of its widths (dim 8, 64
# hidden units; 0.11 million parameters against 13.3 million), for smoke runs
# and for tests of the machinery around a model (training loop, checkpoints,
# CLI, storage, several processes), where the paper's widths only cost time.
CONV_TINY = dataclasses.replace(CONV_MNIST, enc_dense=(64, True), dec_dense_hidden=(64, False))
CONV_TINY_DIM = 8

CONV_32 = DcganSpec(
  enc_convs=((1, False), (2, True), (4, True)),
  enc_dense=None,
  dec_dense_hidden=None,
  dec_start=4,
  dec_start_mult=4,
  dec_start_bn=False,
  dec_deconvs=((2, True), (1, False)),
)

CONV_64 = DcganSpec(
  enc_convs=((1, False), (2, False), (4, True), (8, True)),
  enc_dense=None,
  dec_dense_hidden=None,
  dec_start=4,
  dec_start_mult=8,
  dec_start_bn=False,
  dec_deconvs=((4, True), (2, True), (1, False)),
)


class EncoderHeads(nn.Module):
  """Dense latent mean head and optional log-variance head."""

  latent_dim: int
  with_logvar: bool
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, features: jax.Array):
    mean = layers.dense(self.latent_dim, self.dtype, name='mean')(features)
    mean = mean.astype(layers.at_least_float32(mean.dtype))
    if not self.with_logvar:
      return mean, None
    logvar = layers.dense(
      self.latent_dim,
      self.dtype,
      bias_init=nn.initializers.constant(LOGVAR_BIAS_INIT),
      name='logvar',
    )(features)
    return mean, logvar.astype(layers.at_least_float32(logvar.dtype))


class DcganEncoder(nn.Module):
  """conv(dim) lrelu -> conv(..) [bn] lrelu -> ... -> [dense [bn] lrelu] -> dense(z).

  Returns (mean, logvar); logvar is None unless `with_logvar`.
  """

  spec: DcganSpec
  latent_dim: int
  use_bn: bool = False
  with_logvar: bool = False
  dim: int = 64
  dtype: Optional[jnp.dtype] = None
  conv_impl: str = 'auto'  # conv_forms.forms.layer_forms

  @nn.compact
  def __call__(self, x: jax.Array, stat_rows: Optional[int] = None):
    h = x.astype(self.dtype or x.dtype)
    for i, (mult, has_bn) in enumerate(self.spec.enc_convs):
      h = layers.conv(self.dim * mult, dtype=self.dtype, name=f'conv{i}', conv_impl=self.conv_impl)(
        h
      )
      h = layers.maybe_batch_norm(h, self.use_bn and has_bn, stat_rows, f'bn_conv{i}')
      h = layers.leaky_relu(h)
    h = layers.flatten(h)
    if self.spec.enc_dense is not None:
      units, has_bn = self.spec.enc_dense
      h = layers.dense(units, self.dtype, name='hidden')(h)
      h = layers.maybe_batch_norm(h, self.use_bn and has_bn, stat_rows, 'bn_hidden')
      h = layers.leaky_relu(h)
    return EncoderHeads(self.latent_dim, self.with_logvar, self.dtype, name='heads')(h)


class DcganDecoder(nn.Module):
  """[dense relu] -> dense(s*s*c) [bn] relu -> reshape -> deconv [bn] relu ... -> deconv(channels) tanh."""

  spec: DcganSpec
  channels: int
  use_bn: bool = False
  dim: int = 64
  dtype: Optional[jnp.dtype] = None
  conv_impl: str = 'auto'  # conv_forms.forms.layer_forms

  @nn.compact
  def __call__(self, z: jax.Array, stat_rows: Optional[int] = None) -> jax.Array:
    spec = self.spec
    h = z.astype(self.dtype or z.dtype)
    if spec.dec_dense_hidden is not None:
      units, has_bn = spec.dec_dense_hidden
      h = layers.dense(units, self.dtype, name='hidden')(h)
      h = layers.maybe_batch_norm(h, self.use_bn and has_bn, stat_rows, 'bn_hidden')
      h = nn.relu(h)
    start_channels = self.dim * spec.dec_start_mult
    h = layers.dense(spec.dec_start * spec.dec_start * start_channels, self.dtype, name='project')(
      h
    )
    h = layers.maybe_batch_norm(h, self.use_bn and spec.dec_start_bn, stat_rows, 'bn_project')
    h = nn.relu(h)
    h = h.reshape(h.shape[0], spec.dec_start, spec.dec_start, start_channels)
    for i, (mult, has_bn) in enumerate(spec.dec_deconvs):
      h = layers.UpConv(
        self.dim * mult, dtype=self.dtype, conv_impl=self.conv_impl, name=f'deconv{i}'
      )(h)
      h = layers.maybe_batch_norm(h, self.use_bn and has_bn, stat_rows, f'bn_deconv{i}')
      h = nn.relu(h)
    h = layers.UpConv(self.channels, dtype=self.dtype, conv_impl=self.conv_impl, name='to_image')(h)
    return jnp.tanh(h.astype(layers.at_least_float32(h.dtype)))
