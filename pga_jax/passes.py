"""Gradient routing, and the network passes over the data batch that terms share.

`route(params, updates)` stops gradients on the parameter subtrees a term
must not update: the gradient of a method's loss w.r.t. the encoder is then
that of the reference's encoder loss, w.r.t. the decoder that of its decoder
loss.

`SharedPasses` is how `methods.method_loss(..., fast=True)` evaluates the
terms: each term is the one function of `pga_jax.terms`, called with a
`SharedPasses` as its model. Three quantities several terms use are computed
once per loss evaluation, whatever routing each term asks for:

- f(x), the data encoding (`encode(params['encoder'], images)`): L_r,
  L_nll^phi, the KL, the log-variance of vrec;
- g(f(x)) (`reconstruct`): L_r;
- h(stop_gradient(f(x))) with the encoder frozen (`encode_decode_at_codes`):
  the centre of Eq. 6 and of vrec, whose decoder pass is the one of L_r.

Each is computed with the live parameters; a term whose routing stops a
side gets the same value with `stop_gradient`, which is exact (a pass with
stopped parameters over a constant input has no gradient at all). L_r's
decoder pass and the centre's share one forward and one backward pass for
the decoder's weights (`decode_shared`). Values and gradients equal those of
every term evaluated on its own (the plain `AutoEncoder`), up to float32
rounding: tests/test_fast_paths.py.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax

from pga_jax.models import AutoEncoder, Encoding

sg = jax.lax.stop_gradient
UPDATES = ('encoder', 'decoder', 'both')


def route(params: dict, updates: str) -> dict:
  """Stops gradients on the parameter subtrees a term must not update.

  The subtrees a term may update are passed through as the very same
  objects (`SharedPasses` relies on that to recognise them).
  """
  stop = lambda tree: jax.tree_util.tree_map(sg, tree)
  return {
    'encoder': params['encoder'] if updates in ('encoder', 'both') else stop(params['encoder']),
    'decoder': params['decoder'] if updates in ('decoder', 'both') else stop(params['decoder']),
  }


def decode_shared(model: AutoEncoder, decoder_params, latents: jax.Array):
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


class SharedPasses:
  """The model for one loss evaluation, computing the shared passes once.

  Built from the live parameters and the data batch; `route` hands out
  routed parameters and remembers which subtrees are the stopped copies it
  made, so that the passes can tell a live side from a stopped one. Any
  other call (other inputs, other parameters) goes to the model unchanged.
  """

  def __init__(self, model: AutoEncoder, params: dict, images: jax.Array):
    self._model = model
    self._params = params
    self._images = images
    self._stopped = {'encoder': [], 'decoder': []}  # route's copies (kept alive)
    self._memo = {}

  def __getattr__(self, name):
    return getattr(self._model, name)

  def route(self, updates: str) -> dict:
    routed = route(self._params, updates)
    for side in ('encoder', 'decoder'):
      if routed[side] is not self._params[side]:
        self._stopped[side].append(routed[side])
    return routed

  def _status(self, subtree, side: str) -> Optional[str]:
    """'live', 'stopped' (a copy `route` made) or None (other parameters)."""
    if subtree is self._params[side]:
      return 'live'
    if any(subtree is copy for copy in self._stopped[side]):
      return 'stopped'
    return None

  def _once(self, key: str, compute: Callable):
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]

  def _live_encoding(self) -> Encoding:
    return self._once('encoding', lambda: self._model.encode(self._params['encoder'], self._images))

  def _decoded(self):
    """(g(f(x)) live, g(stop_gradient(f(x))) for the decoder only)."""
    return self._once(
      'decoded',
      lambda: decode_shared(self._model, self._params['decoder'], self._live_encoding().mean),
    )

  def encode(self, encoder_params, images: jax.Array, stat_rows: Optional[int] = None):
    status = self._status(encoder_params, 'encoder')
    if images is not self._images or stat_rows is not None or status is None:
      return self._model.encode(encoder_params, images, stat_rows)
    encoding = self._live_encoding()
    if status == 'live':
      return encoding
    return Encoding(sg(encoding.mean), None if encoding.logvar is None else sg(encoding.logvar))

  def reconstruct(self, params: dict, images: jax.Array) -> jax.Array:
    enc = self._status(params['encoder'], 'encoder')
    dec = self._status(params['decoder'], 'decoder')
    if images is not self._images or enc is None or dec != 'live':
      return self._model.decode(params['decoder'], self.encode(params['encoder'], images).mean)
    live, decoder_only = self._decoded()
    return live if enc == 'live' else decoder_only

  def encode_decode_at_codes(self, params: dict, images: jax.Array) -> jax.Array:
    enc = self._status(params['encoder'], 'encoder')
    dec = self._status(params['decoder'], 'decoder')
    if images is not self._images or enc is None or dec is None:
      return self._model.encode_decode_at_codes(params, images)
    centre = self._once(
      'centre',
      lambda: (
        self._model.encode(
          jax.tree_util.tree_map(sg, self._params['encoder']), self._decoded()[1]
        ).mean
      ),
    )
    return centre if dec == 'live' else sg(centre)
