"""Encoder/decoder architectures of the reference: conv_mnist, conv_32, conv_64, resnet_32
(and conv_tiny, a narrow conv_mnist for smoke runs and tests)."""

from pga_jax.models.autoencoder import ARCHITECTURES, AutoEncoder, Encoding, param_count

__all__ = ['ARCHITECTURES', 'AutoEncoder', 'Encoding', 'param_count']
