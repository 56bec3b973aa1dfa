"""resnet_32: the reference's residual encoder/decoder for 32x32 images.

Pre-activation residual blocks of width 512 with 3x3 convolutions; a 1x1
convolution on the skip path whenever the block changes the shape (spatial
size or width); 2x2 average pooling to go down, nearest-neighbour unpooling to
go up.

- Encoder: 2 down blocks (32->16->8), 2 plain blocks, relu, dense(z)
  (+ log-variance head when the method needs it).
- Decoder: dense(4*4*4*512) reshaped to 4x4x2048, 3 up blocks (4->8->16->32,
  width 512), relu, conv3x3(channels), tanh.

Deviation, stated: the first encoder block acts on raw pixels, so it skips the
pre-activation (a relu/bn of the image), as residual GAN discriminators do.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pga_jax.models import layers
from pga_jax.models.dcgan import EncoderHeads


def avg_pool2(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def unpool2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResidualBlock(nn.Module):
  """Pre-activation block: [bn] relu conv3x3 [bn] relu conv3x3, plus skip.

  resample: None, 'down' (avg-pool after the convs and on the skip) or 'up'
  (unpool before the first conv and on the skip).
  """

  features: int
  resample: Optional[str] = None
  use_bn: bool = False
  preactivate: bool = True
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, stat_rows: Optional[int] = None) -> jax.Array:
    skip = x
    if self.resample == 'up':
      skip = unpool2(skip)
    elif self.resample == 'down':
      skip = avg_pool2(skip)
    if skip.shape[-1] != self.features or self.resample is not None:
      skip = layers.conv(self.features, 1, 1, self.dtype, name='skip')(skip)

    h = x
    if self.preactivate:
      h = layers.maybe_batch_norm(h, self.use_bn, stat_rows, 'bn0')
      h = nn.relu(h)
    if self.resample == 'up':
      h = unpool2(h)
    h = layers.conv(self.features, 3, 1, self.dtype, name='conv0')(h)
    h = layers.maybe_batch_norm(h, self.use_bn, stat_rows, 'bn1')
    h = nn.relu(h)
    h = layers.conv(self.features, 3, 1, self.dtype, name='conv1')(h)
    if self.resample == 'down':
      h = avg_pool2(h)
    return skip + h


class ResnetEncoder(nn.Module):
  latent_dim: int
  use_bn: bool = False
  with_logvar: bool = False
  width: int = 512
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, stat_rows: Optional[int] = None):
    h = x.astype(self.dtype or x.dtype)
    h = ResidualBlock(
      self.width, 'down', self.use_bn, preactivate=False, dtype=self.dtype, name='down0'
    )(h, stat_rows)
    h = ResidualBlock(self.width, 'down', self.use_bn, dtype=self.dtype, name='down1')(h, stat_rows)
    h = ResidualBlock(self.width, None, self.use_bn, dtype=self.dtype, name='plain0')(h, stat_rows)
    h = ResidualBlock(self.width, None, self.use_bn, dtype=self.dtype, name='plain1')(h, stat_rows)
    h = nn.relu(h)
    h = layers.flatten(h)
    return EncoderHeads(self.latent_dim, self.with_logvar, self.dtype, name='heads')(h)


class ResnetDecoder(nn.Module):
  channels: int
  use_bn: bool = False
  width: int = 512
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z: jax.Array, stat_rows: Optional[int] = None) -> jax.Array:
    h = z.astype(self.dtype or z.dtype)
    start_channels = 4 * self.width
    h = layers.dense(4 * 4 * start_channels, self.dtype, name='project')(h)
    h = h.reshape(h.shape[0], 4, 4, start_channels)
    for i in range(3):
      h = ResidualBlock(self.width, 'up', self.use_bn, dtype=self.dtype, name=f'up{i}')(
        h, stat_rows
      )
    h = layers.maybe_batch_norm(h, self.use_bn, stat_rows, 'bn_out')
    h = nn.relu(h)
    h = layers.conv(self.channels, 3, 1, self.dtype, name='to_image')(h)
    return jnp.tanh(h.astype(layers.at_least_float32(h.dtype)))
