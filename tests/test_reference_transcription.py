"""Every method's gradients against a transcription of the authors' TF1 code.

What is checked. The reference trains each method with two losses and one
optimizer: the encoder's variables get d enc_loss / d encoder, the
decoder's d dec_loss / d decoder (`optimizer.compute_gradients(enc_loss,
enc_vars)` and `(dec_loss, dec_vars)`). We train with one loss whose terms
are routed by stop-gradients (`pga_jax.methods`). For AE, VAE, LPGA, VPGA
and LVPGA this module checks, with batch norm off and on, that the
gradient of our one loss as training computes it (`fast=True`: the terms
share their network passes) w.r.t. the encoder equals d enc_loss / d
encoder and w.r.t. the decoder equals d dec_loss / d decoder, to 1e-4
relative. The plain path (`fast=False`, each term on its own) is not
compared here cell by cell: tests/test_fast_paths.py checks that it gives
the fast path's losses, metrics and gradients for every method with batch
norm off and on, and the mutation checks below differentiate it.

Why it is independent. `enc_loss` and `dec_loss` below are transcribed line
by line from the authors' code, not from our docs or our term functions:
- LPGA: zj10/PGA, src/train_lpga.py
- VPGA: zj10/PGA, src/train_vpga.py
- LVPGA: zj10/PGA, src/train_lvpga.py
- VAE: LynnHo/VAE-Tensorflow, train.py
- AE: LPGA's losses with every coefficient but L_r at 0, i.e.
  enc_loss = dec_loss = mean((g(f(x)) - x)^2).
The sources: github.com/zj10/PGA at commit
aa908554925540f8c79c5228cde7fb306fe8868a and github.com/LynnHo/VAE-Tensorflow
at commit c204a9438a0e7e046ad6cc7257942528accbbe60 (docs/reference_code.md
says in words what they compute).
They use only the networks' apply functions (`AutoEncoder.encode` and
`.decode`), `jax` and `numpy`; nothing from `pga_jax.losses`, `.terms` or
`.fused`. From `pga_jax.methods` they take only `term_rng`, to regenerate
the random numbers our terms draw. Each network call of the reference is
one call here (with batch norm on, every call normalises with its own
batch's statistics), and the TF idioms that decide gradients are kept
literally: `tf.stop_gradient`, VPGA/LVPGA's `no_enc_grad` subtraction,
`tf.losses.mean_squared_error` (a mean over all elements), the full
Gaussian `log_prob`, the division by z_dim, the warm-up
`tf.cond(global_step > init_steps, ...)` and `if zh_rec_coeff > 0`.

The comparison can fail: `test_a_removed_or_rerouted_term_is_detected`
removes each term of each method, or flips which network it updates, and
requires the comparison to fail. A mutated method's gradient is assembled
from each term's gradient w.r.t. each network (`term_parts`, one compile per
method, not one per mutation); that the assembly is the gradient of our loss
is measured for every method, as declared and with every term rerouted at
once (`test_gradients_assembled_from_term_parts_are_method_loss_gradients`,
and before each mutation is measured).

Run `python -m tests.test_reference_transcription` for a table of the
largest relative gradient differences per method, batch norm and path.
"""

import dataclasses
import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pga_jax import config as config_lib
from pga_jax import methods

sg = jax.lax.stop_gradient

B, H = 8, 4  # batch size, z_dim
INIT_STEPS = 20  # the reference's init_steps
STEP_AFTER_WARMUP = 1000  # global_step well past the warm-up
TOLERANCE = 1e-4  # largest relative gradient difference allowed
# Every coefficient on, distinct values within each method, chosen so that
# every term moves the gradient it reaches by >1e-2 relative (at these
# parameters; see test_a_removed_or_rerouted_term_is_detected): the log-det
# terms (LPGA's nll_dec, LVPGA's vrec) have decoder gradients ~1e4 times
# L_r's at initialisation, hence their small coefficients there, and VPGA's
# vrec reaches the encoder only through sigma, hence its large one.
COEFFICIENTS = dict(zn_rec=0.05, zh_rec=0.2, nll=0.15, vrec=0.25, vkld=0.35, beta=0.4)
METHOD_COEFFICIENTS = {'lpga': dict(nll=1e-3), 'vpga': dict(vrec=2.0), 'lvpga': dict(vrec=2e-3)}
METHOD_NAMES = ('ae', 'vae', 'lpga', 'vpga', 'lvpga')
# Zero-gradient leaves. With batch norm on, the bias of a layer right before
# batch norm has an exactly-zero gradient in exact arithmetic (the
# normalisation subtracts it again; the reference's slim layers do not even
# create it). Computed, it is float32 rounding noise on both sides (the
# cancelling sum over the batch: 1e-9 to 1e-5 here, 1e-7 of the network's
# gradient norm), and the ratio of two noises says nothing. A leaf whose
# reference gradient is below ZERO_LEAF times the network's gradient norm is
# therefore measured against the network's norm: ours must be ~0 there too.
# Every other leaf is measured against its own norm (the smallest of those
# here is ~1e-2 of the network's norm).
ZERO_LEAF = 1e-5
NETWORKS = ('encoder', 'decoder')


# ------------------------------------------------------------------------------
# The reference's building blocks, in jax.numpy.
# ------------------------------------------------------------------------------


def mean_squared_error(labels, predictions):
  """tf.losses.mean_squared_error with default weights: mean over all elements."""
  return jnp.mean(jnp.square(predictions - labels))


def standard_normal_log_prob(z):
  """tfd.MultivariateNormalDiag(scale_diag=ones).log_prob(z), constant included."""
  dim = z.shape[-1]
  return -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * dim * math.log(2.0 * math.pi)


def after_warmup(coeff, global_step, init_steps):
  """tf.cond(global_step > init_steps, lambda: coeff, lambda: 0.)."""
  return jnp.where(global_step > init_steps, coeff, 0.0)


def kl_loss(z_mu, z_log_sigma_sq):
  """-tf.reduce_mean(0.5 * (1 + log s^2 - mu^2 - exp(log s^2))): over batch and dims."""
  return -jnp.mean(0.5 * (1.0 + z_log_sigma_sq - z_mu**2 - jnp.exp(z_log_sigma_sq)))


class Networks:
  """The reference's Enc and Dec as calls of our networks' apply functions.

  `Enc(img)` returns the encoder's outputs as the reference's `Enc` does:
  `z` without a log-variance head (LPGA, AE), `(z_mu, z_log_sigma_sq)` with
  one. Each call is one batch with its own batch-norm statistics.
  """

  def __init__(self, model, enc_params, dec_params):
    self._model, self._enc, self._dec = model, enc_params, dec_params

  def Enc(self, img):  # pylint: disable=invalid-name
    encoding = self._model.encode(self._enc, img)
    if encoding.logvar is None:
      return encoding.mean
    return encoding.mean, encoding.logvar

  def Dec(self, z):  # pylint: disable=invalid-name
    return self._model.decode(self._dec, z)


def _prior_sample(rng):
  """normal_dist.sample(batch_size), drawn as our zn_rec term draws it."""
  return jax.random.normal(methods.term_rng(rng, 'zn_rec'), (B, H))


# ------------------------------------------------------------------------------
# Transcriptions: each returns (enc_loss, dec_loss) of one training step.
# ------------------------------------------------------------------------------


def ae_losses(nets, img, rng, global_step, config):
  """train_lpga.py with zn_rec = zh_rec = nll = 0: both losses are L_r."""
  del rng, global_step, config
  z = nets.Enc(img)
  img_rec = nets.Dec(z)
  img_rec_loss = mean_squared_error(img, img_rec)
  return img_rec_loss, img_rec_loss


def vae_losses(nets, img, rng, global_step, config):
  """LynnHo/VAE-Tensorflow, train.py: one loss, minimised over all variables."""
  del global_step
  z_mu, z_log_sigma_sq = nets.Enc(img)
  epsilon = jax.random.normal(methods.term_rng(rng, 'rec'), z_mu.shape)
  z = z_mu + jnp.exp(0.5 * z_log_sigma_sq) * epsilon
  img_rec = nets.Dec(z)
  rec_loss = mean_squared_error(img, img_rec)
  kld_loss = kl_loss(z_mu, z_log_sigma_sq)
  loss = rec_loss + kld_loss * config.beta
  return loss, loss


def lpga_losses(nets, img, rng, global_step, config):
  """zj10/PGA, src/train_lpga.py, the graph section."""
  z_dim, init_steps = H, config.init_steps
  assert config.num_perturbations == 1  # the reference draws one perturbation batch

  def enc_dec(img):
    z = nets.Enc(img)
    img_rec = nets.Dec(z)
    return z, img_rec

  def dec_enc(z):
    img = nets.Dec(z)
    z_rec = nets.Enc(img)
    return z_rec

  z, img_rec = enc_dec(img)
  zn_targ, zh_targ = _prior_sample(rng), sg(z)
  zn_rec, zh_rec = dec_enc(zn_targ), dec_enc(zh_targ)

  def log_det_jacobian(z):
    z = sg(z)
    epsilon = 1e-2 * z_dim**0.5
    delta = jax.random.normal(methods.term_rng(rng, 'nll_dec'), (1, B, z_dim))[0]
    delta = delta / jnp.sqrt(jnp.sum(jnp.square(delta), 1, keepdims=True)) * epsilon
    return (
      z_dim / 2 * jnp.log(jnp.sum(jnp.square(1 / epsilon * (dec_enc(z + delta) - dec_enc(z))), 1))
    )

  img_rec_loss = mean_squared_error(img, img_rec)
  zn_rec_loss = mean_squared_error(zn_targ, zn_rec)
  zh_rec_loss = mean_squared_error(zh_targ, zh_rec)
  nll_enc_loss = -jnp.mean(standard_normal_log_prob(z)) / z_dim
  nll_dec_loss = jnp.mean(log_det_jacobian(z)) / z_dim

  zn_rec_coeff = after_warmup(config.zn_rec, global_step, init_steps)
  nll_coeff = after_warmup(config.nll, global_step, init_steps)
  enc_loss = img_rec_loss + zn_rec_coeff * zn_rec_loss + nll_coeff * nll_enc_loss
  if config.zh_rec > 0:
    zh_rec_coeff = after_warmup(config.zh_rec, global_step, init_steps)
    enc_loss += zh_rec_coeff * zh_rec_loss
  dec_loss = img_rec_loss + nll_coeff * nll_dec_loss
  return enc_loss, dec_loss


def _vpga_style_graph(nets):
  """enc_dec and dec_enc (with `no_enc_grad`) of train_vpga.py / train_lvpga.py."""

  def enc_dec(img):
    z_mu, z_log_sigma_sq = nets.Enc(img)
    img_rec = nets.Dec(z_mu)
    return z_mu, z_log_sigma_sq, img_rec

  def dec_enc(z, no_enc_grad=False):
    img = nets.Dec(z)
    z_rec, _ = nets.Enc(img)
    if no_enc_grad:
      # z_rec -= Enc(stop_gradient(img))[0] - stop_gradient(z_rec): the same
      # value; the encoder weights' gradient through z_rec cancels, the
      # gradient w.r.t. img (hence the decoder and z) remains.
      z_rec = z_rec - (nets.Enc(sg(img))[0] - sg(z_rec))
    return z_rec

  return enc_dec, dec_enc


def vpga_losses(nets, img, rng, global_step, config):
  """zj10/PGA, src/train_vpga.py, the graph section (no warm-up, no global_step)."""
  del global_step
  enc_dec, dec_enc = _vpga_style_graph(nets)

  z_mu, z_log_sigma_sq, img_rec = enc_dec(img)
  z_noise = jnp.exp(0.5 * z_log_sigma_sq) * jax.random.normal(
    methods.term_rng(rng, 'vrec'), z_mu.shape
  )
  zn_targ, zh_targ = _prior_sample(rng), sg(z_mu)
  zn_rec, zh_rec = dec_enc(zn_targ), dec_enc(zh_targ)
  z_mu_rec = dec_enc(sg(z_mu), no_enc_grad=True)
  z_rec = dec_enc(sg(z_mu) + z_noise, no_enc_grad=True)

  img_rec_loss = mean_squared_error(img, img_rec)
  zn_rec_loss = mean_squared_error(zn_targ, zn_rec)
  zh_rec_loss = mean_squared_error(zh_targ, zh_rec)
  z_mu_norm = sg(jnp.sqrt(jnp.mean(jnp.square(z_mu), 0)))
  vrec_loss = mean_squared_error(z_mu_rec / z_mu_norm, z_rec / z_mu_norm)
  vkld_loss = kl_loss(z_mu, z_log_sigma_sq)

  enc_loss = (
    img_rec_loss + config.zn_rec * zn_rec_loss + config.vrec * vrec_loss + config.vkld * vkld_loss
  )
  if config.zh_rec > 0:
    enc_loss += config.zh_rec * zh_rec_loss
  dec_loss = img_rec_loss + config.vrec * vrec_loss
  return enc_loss, dec_loss


def lvpga_losses(nets, img, rng, global_step, config):
  """zj10/PGA, src/train_lvpga.py, the graph section.

  Its `vrec` is a log-det estimate with Gaussian perturbations (no squared
  error); `nll` weights the encoder NLL only. The perturbation directions
  are drawn as `normal(term_rng(rng, 'vrec'), (K, B, H))[0]`, K = 1.
  """
  z_dim, init_steps = H, config.init_steps
  assert config.num_perturbations == 1
  enc_dec, dec_enc = _vpga_style_graph(nets)

  z_mu, z_log_sigma_sq, img_rec = enc_dec(img)
  zn_targ, zh_targ = _prior_sample(rng), sg(z_mu)
  zn_rec, zh_rec = dec_enc(zn_targ), dec_enc(zh_targ)

  def log_det_jacobian(z):
    z = sg(z)
    # sigma is NOT stop-gradient: the log-variance head learns through delta.
    delta = jax.random.normal(methods.term_rng(rng, 'vrec'), (1, B, z_dim))[0] * (
      jnp.exp(0.5 * z_log_sigma_sq) + 1e-2
    )
    epsilon = sg(jnp.sqrt(jnp.sum(jnp.square(delta), 1, keepdims=True)))
    return (
      z_dim
      / 2
      * jnp.log(
        jnp.sum(
          jnp.square(
            1 / epsilon * (dec_enc(z + delta, no_enc_grad=True) - dec_enc(z, no_enc_grad=True))
          ),
          1,
        )
      )
    )

  img_rec_loss = mean_squared_error(img, img_rec)
  zn_rec_loss = mean_squared_error(zn_targ, zn_rec)
  zh_rec_loss = mean_squared_error(zh_targ, zh_rec)
  vrec_loss = jnp.mean(log_det_jacobian(z_mu)) / z_dim
  vkld_loss = kl_loss(z_mu, z_log_sigma_sq)
  nll_enc_loss = -jnp.mean(standard_normal_log_prob(z_mu)) / z_dim

  zn_rec_coeff = after_warmup(config.zn_rec, global_step, init_steps)
  vrec_coeff = after_warmup(config.vrec, global_step, init_steps)
  vkld_coeff = after_warmup(config.vkld, global_step, init_steps)
  nll_coeff = after_warmup(config.nll, global_step, init_steps)
  enc_loss = (
    img_rec_loss
    + zn_rec_coeff * zn_rec_loss
    + vrec_coeff * vrec_loss
    + vkld_coeff * vkld_loss
    + nll_coeff * nll_enc_loss
  )
  if config.zh_rec > 0:
    zh_rec_coeff = after_warmup(config.zh_rec, global_step, init_steps)
    enc_loss += zh_rec_coeff * zh_rec_loss
  dec_loss = img_rec_loss + vrec_coeff * vrec_loss
  return enc_loss, dec_loss


REFERENCE_LOSSES = {
  'ae': ae_losses,
  'vae': vae_losses,
  'lpga': lpga_losses,
  'vpga': vpga_losses,
  'lvpga': lvpga_losses,
}
# The config fields each transcription reads as coefficients (`config.<name>`
# in the functions above).
REFERENCE_COEFFICIENTS = {
  'ae': (),
  'vae': ('beta',),
  'lpga': ('zn_rec', 'zh_rec', 'nll'),
  'vpga': ('zn_rec', 'zh_rec', 'vrec', 'vkld'),
  'lvpga': ('zn_rec', 'zh_rec', 'vrec', 'vkld', 'nll'),
}


# ------------------------------------------------------------------------------
# Gradients and their comparison.
# ------------------------------------------------------------------------------


def make_config(method_name: str, use_bn: bool):
  config = config_lib.base_config(method_name)
  config.arch = 'conv_mnist'
  config.batch_size = B
  config.latent_dim = H
  config.use_bn = use_bn
  config.init_steps = INIT_STEPS
  config.num_perturbations = 1
  # Only the coefficients the transcription reads (another one would add its
  # term to ours), whatever `methods.METHODS` declares: a term missing from
  # our declaration keeps its coefficient in the reference's losses.
  for name, value in dict(COEFFICIENTS, **METHOD_COEFFICIENTS.get(method_name, {})).items():
    if name in REFERENCE_COEFFICIENTS[method_name]:
      config[name] = value
  return config


def make_params(model, key):
  """The model's initial parameters, the log-variance bias set to 0 (sigma ~ 1).

  At its initial value 2*log(0.1) (sigma = 0.1) the terms that reach the
  encoder only through sigma (VPGA's vrec) change its gradient by ~1e-5
  relative, too little for the comparison to notice them.
  """
  params = model.init(key)
  heads = params['encoder']['heads']
  if 'logvar' in heads:
    logvar = dict(heads['logvar'], bias=jnp.zeros_like(heads['logvar']['bias']))
    params = {
      'encoder': dict(params['encoder'], heads=dict(heads, logvar=logvar)),
      'decoder': params['decoder'],
    }
  return params


def make_inputs(seed: int = 0):
  """Parameters at initialisation, images in [-1, 1], the step's key."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  images = jax.random.uniform(keys[1], (B, 28, 28, 1), minval=-1.0, maxval=1.0)
  return keys[0], images, keys[2]


@functools.lru_cache(maxsize=None)
def case(method_name: str, use_bn: bool):
  """(config, model, method, params, images, rng, jitted reference gradients)."""
  config = make_config(method_name, use_bn)
  _, model, method = methods.make_loss_fn(config, channels=1, fast=False)
  init_key, images, rng = make_inputs()
  params = make_params(model, init_key)
  losses_fn = REFERENCE_LOSSES[method_name]

  @jax.jit
  def reference_grads(params, images, rng, step):
    enc, dec = params['encoder'], params['decoder']
    enc_loss = lambda e: losses_fn(Networks(model, e, dec), images, rng, step, config)[0]
    dec_loss = lambda d: losses_fn(Networks(model, enc, d), images, rng, step, config)[1]
    return {'encoder': jax.grad(enc_loss)(enc), 'decoder': jax.grad(dec_loss)(dec)}

  return config, model, method, params, images, rng, reference_grads


@functools.lru_cache(maxsize=None)
def our_grads_fn(method_name: str, use_bn: bool, fast: bool):
  """Jitted gradient of our one routed loss, `methods.make_loss_fn(config, 1, fast)`."""
  config = make_config(method_name, use_bn)
  loss_fn, _, _ = methods.make_loss_fn(config, channels=1, fast=fast)
  return jax.jit(jax.grad(lambda p, x, r, s: loss_fn(p, x, r, s)[0]))


def _leaf_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def relative_difference(ours, reference):
  """(largest relative difference over leaves, that leaf's name) for one network.

  Per leaf: ||ours - ref|| / ||ref||, or / ||ref of the whole network|| for a
  zero-gradient leaf (see ZERO_LEAF).
  """
  total = math.sqrt(
    sum(float(jnp.sum(jnp.square(x))) for x in jax.tree_util.tree_leaves(reference))
  )
  assert total > 0.0
  worst, worst_name = 0.0, ''
  flat_ref = jax.tree_util.tree_flatten_with_path(reference)[0]
  flat_ours = jax.tree_util.tree_flatten_with_path(ours)[0]
  assert [p for p, _ in flat_ref] == [p for p, _ in flat_ours]
  for (path, ref_leaf), (_, our_leaf) in zip(flat_ref, flat_ours):
    ref_leaf, our_leaf = np.asarray(ref_leaf, np.float64), np.asarray(our_leaf, np.float64)
    ref_norm = np.linalg.norm(ref_leaf)
    denominator = ref_norm if ref_norm >= ZERO_LEAF * total else total
    rel = np.linalg.norm(our_leaf - ref_leaf) / denominator
    if not np.isfinite(rel):
      rel = np.inf
    if rel >= worst:
      worst, worst_name = rel, _leaf_name(path)
  return worst, worst_name


def compare(ours, reference):
  """{'encoder': (rel, leaf), 'decoder': (rel, leaf)}."""
  return {net: relative_difference(ours[net], reference[net]) for net in NETWORKS}


def measure(method_name: str, use_bn: bool, fast: bool, step: int):
  _, _, _, params, images, rng, reference_grads = case(method_name, use_bn)
  step = jnp.asarray(step, jnp.int32)
  reference = reference_grads(params, images, rng, step)
  ours = our_grads_fn(method_name, use_bn, fast)(params, images, rng, step)
  return compare(ours, reference)


def assert_close(diffs, label):
  for net in ('encoder', 'decoder'):
    rel, leaf = diffs[net]
    assert rel <= TOLERANCE, (
      f'{label}: gradient w.r.t. the {net} differs from the reference transcription '
      f'by {rel:.3g} relative (largest at leaf {leaf}); allowed {TOLERANCE}'
    )


# ------------------------------------------------------------------------------
# Tests.
# ------------------------------------------------------------------------------


@pytest.mark.parametrize('use_bn', [False, True], ids=['no_bn', 'bn'])
@pytest.mark.parametrize('method_name', METHOD_NAMES)
def test_gradients_equal_the_reference_encoder_and_decoder_losses(method_name, use_bn):
  diffs = measure(method_name, use_bn, True, STEP_AFTER_WARMUP)
  assert_close(diffs, f'{method_name} bn={use_bn} step={STEP_AFTER_WARMUP}')


@pytest.mark.parametrize(
  'step', [INIT_STEPS, INIT_STEPS + 1], ids=['at_init_steps_only_rec', 'after_init_steps_all_terms']
)
def test_lpga_warmup_boundary_is_the_references(step):
  """The reference's terms are on when global_step > init_steps (steps applied)."""
  diffs = measure('lpga', False, True, step)
  assert_close(diffs, f'lpga step={step} init_steps={INIT_STEPS}')


@pytest.mark.parametrize('method_name', ['ae', 'vae', 'vpga'])
def test_methods_without_warmup_use_every_term_from_step_0(method_name):
  """The reference's VPGA and VAE have no warm-up: init_steps must not matter."""
  diffs = measure(method_name, False, False, 0)
  assert_close(diffs, f'{method_name} step=0 init_steps={INIT_STEPS}')


def _mutations():
  """(method, term, mutation) for every term of every method: removed, or
  its routing flipped ('encoder' <-> 'decoder', 'both' -> each side)."""
  flips = {'encoder': ('decoder',), 'decoder': ('encoder',), 'both': ('encoder', 'decoder')}
  out = []
  for method_name in METHOD_NAMES:
    for term in methods.METHODS[method_name].terms:
      out.append((method_name, term.name, 'remove'))
      out.extend((method_name, term.name, f'to_{side}') for side in flips[term.updates])
  return out


def mutate(method, term_name: str, mutation: str):
  if mutation == 'remove':
    return dataclasses.replace(method, terms=tuple(t for t in method.terms if t.name != term_name))
  side = mutation[len('to_') :]
  return dataclasses.replace(
    method,
    terms=tuple(
      dataclasses.replace(t, updates=side) if t.name == term_name else t for t in method.terms
    ),
  )


def rerouted_everywhere(method):
  """`method` with every term's routing flipped at once (a 'both' term to the
  encoder): the mutation `assembly_check` also computes through `method_loss`."""
  for term in method.terms:
    method = mutate(method, term.name, 'to_decoder' if term.updates == 'encoder' else 'to_encoder')
  return method


def _numpy(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


@functools.lru_cache(maxsize=None)
def reference_gradient(method_name: str):
  """The transcription's gradients (batch norm off, step STEP_AFTER_WARMUP)."""
  _, _, _, params, images, rng, reference_grads = case(method_name, False)
  return _numpy(reference_grads(params, images, rng, jnp.asarray(STEP_AFTER_WARMUP, jnp.int32)))


@functools.lru_cache(maxsize=None)
def term_parts(method_name: str):
  """{term name: {'encoder': part, 'decoder': part}}: each term's weighted loss
  contribution differentiated w.r.t. both networks, before any routing.

  A term's parts are the gradient of `methods.method_loss` of the method with
  that term alone, routed 'both': the same term function, key (`term_rng`),
  coefficient and warm-up weight (`term_coefficient` at STEP_AFTER_WARMUP) as
  in the whole method. Batch norm off, plain path; one jitted function
  computes every term's parts.
  """
  config, model, method, params, images, rng, _ = case(method_name, False)

  @jax.jit
  def parts(params, images, rng, step):
    out = {}
    for term in method.terms:
      alone = dataclasses.replace(method, terms=(dataclasses.replace(term, updates='both'),))
      loss = lambda p, alone=alone: methods.method_loss(
        alone, model, p, images, rng, step, config, fast=False
      )[0]
      out[term.name] = jax.grad(loss)(params)
    return out

  return _numpy(parts(params, images, rng, jnp.asarray(STEP_AFTER_WARMUP, jnp.int32)))


def assemble(method_name: str, method):
  """The gradient of `method`'s loss (a mutation of the method `method_name`
  names) from `term_parts`: each computed term adds its encoder part if it
  updates the encoder and its decoder part if it updates the decoder.

  `route`'s stop_gradient on a network's parameters removes exactly that
  network's part of the term's gradient, and `method_loss` is a sum of
  weighted terms (the plain path computes each term on its own), so this is
  the gradient `jax.grad` of `method_loss` gives; `assembly_check` measures
  that it is.
  """
  config, _, _, params, _, _, _ = case(method_name, False)
  parts = term_parts(method_name)
  grads = {net: jax.tree_util.tree_map(np.zeros_like, _numpy(params[net])) for net in NETWORKS}
  for term in methods.active_terms(method, config):
    for net in NETWORKS:
      if term.updates in (net, 'both'):
        grads[net] = jax.tree_util.tree_map(np.add, grads[net], parts[term.name][net])
  return grads


def _agreement(ours, theirs):
  """`compare`, where a network whose gradient is exactly 0 on their side
  (everything reaching it rerouted away) must be exactly 0 on ours."""
  out = {}
  for net in NETWORKS:
    if not any(np.any(leaf) for leaf in jax.tree_util.tree_leaves(theirs[net])):
      zero = not any(np.any(leaf) for leaf in jax.tree_util.tree_leaves(ours[net]))
      out[net] = (0.0 if zero else math.inf, '')
    else:
      out[net] = relative_difference(ours[net], theirs[net])
  return out


@functools.lru_cache(maxsize=None)
def assembly_check(method_name: str):
  """{'unmutated': diffs, 'rerouted': diffs}: gradients assembled from the
  terms' parts against those of our loss itself (`compare`'s form).

  unmutated: the method as declared against `our_grads_fn` (the routed loss
  `test_gradients_equal_the_reference_encoder_and_decoder_losses` checks, bn
  off, plain path). rerouted: `rerouted_everywhere(method)` against
  `jax.grad` of `methods.method_loss` of that mutated method. Between them
  every term's encoder and decoder parts enter a checked sum.
  """
  config, model, method, params, images, rng, _ = case(method_name, False)
  step = jnp.asarray(STEP_AFTER_WARMUP, jnp.int32)
  ours = _numpy(our_grads_fn(method_name, False, False)(params, images, rng, step))
  rerouted = rerouted_everywhere(method)
  direct = jax.jit(
    jax.grad(
      lambda p: methods.method_loss(rerouted, model, p, images, rng, step, config, fast=False)[0]
    )
  )(params)
  return {
    'unmutated': _agreement(assemble(method_name, method), ours),
    'rerouted': _agreement(assemble(method_name, rerouted), _numpy(direct)),
  }


def assert_assembly_is_method_loss(method_name: str):
  for what, diffs in assembly_check(method_name).items():
    for net in NETWORKS:
      rel, leaf = diffs[net]
      assert rel <= TOLERANCE, (
        f"{method_name}: the {what} gradient assembled from the terms' parts differs from "
        f"methods.method_loss's w.r.t. the {net} by {rel:.3g} relative (largest at leaf "
        f'{leaf}); allowed {TOLERANCE}'
      )


def measure_mutation(method_name: str, term_name: str, mutation: str):
  """`compare` of the mutated method's gradient (bn off, plain path, step
  STEP_AFTER_WARMUP), assembled from `term_parts`, with the reference's."""
  _, _, method, _, _, _, _ = case(method_name, False)
  mutated = mutate(method, term_name, mutation)
  assert mutated != method
  assert_assembly_is_method_loss(method_name)
  return compare(assemble(method_name, mutated), reference_gradient(method_name))


@pytest.mark.parametrize('method_name', METHOD_NAMES)
def test_gradients_assembled_from_term_parts_are_method_loss_gradients(method_name):
  """What the mutations below are measured with is the gradient of our loss."""
  assert_assembly_is_method_loss(method_name)


@pytest.mark.parametrize('method_name,term_name,mutation', _mutations())
def test_a_removed_or_rerouted_term_is_detected(method_name, term_name, mutation):
  """The comparison is not vacuous: a wrong method fails it clearly."""
  diffs = measure_mutation(method_name, term_name, mutation)
  worst = max(diffs['encoder'][0], diffs['decoder'][0])
  assert worst > 100 * TOLERANCE, (
    f'{method_name} with term {term_name!r} mutated ({mutation}) still matches the '
    f'reference: relative differences {diffs}'
  )


# ------------------------------------------------------------------------------
# python -m tests.test_reference_transcription: the table for the closing note.
# ------------------------------------------------------------------------------


def main(argv):
  with_mutations = '--mutations' in argv
  print(
    f'conv_mnist, batch {B}, latent {H}, init_steps {INIT_STEPS}, '
    f'step {STEP_AFTER_WARMUP}, coefficients {COEFFICIENTS}, per method '
    f'{METHOD_COEFFICIENTS}, log-variance bias 0'
  )
  print(
    'largest relative difference over parameter leaves, ours vs. the '
    'transcribed reference (d enc_loss/d encoder, d dec_loss/d decoder)'
  )
  header = (
    f'{"method":<7} {"bn":<5} {"path":<6} {"step":>5} {"encoder":>10} {"decoder":>10}  result'
  )
  print(header)
  print('-' * len(header))
  rows = [
    (m, bn, fast, STEP_AFTER_WARMUP)
    for m in METHOD_NAMES
    for bn in (False, True)
    for fast in (True, False)
  ]
  rows += [('lpga', False, fast, s) for s in (INIT_STEPS, INIT_STEPS + 1) for fast in (True, False)]
  rows += [(m, False, False, 0) for m in ('ae', 'vae', 'vpga')]
  for method_name, use_bn, fast, step in rows:
    diffs = measure(method_name, use_bn, fast, step)
    ok = max(diffs['encoder'][0], diffs['decoder'][0]) <= TOLERANCE
    print(
      f'{method_name:<7} {str(use_bn):<5} {"fast" if fast else "plain":<6} {step:>5} '
      f'{diffs["encoder"][0]:>10.2e} {diffs["decoder"][0]:>10.2e}  '
      f'{"ok" if ok else "FAIL"}'
    )
  if with_mutations:
    print()
    print('mutations (bn off, plain path): a removed or rerouted term must FAIL')
    header = f'{"method":<7} {"term":<8} {"mutation":<11} {"encoder":>10} {"decoder":>10}  detected'
    print(header)
    print('-' * len(header))
    for method_name, term_name, mutation in _mutations():
      diffs = measure_mutation(method_name, term_name, mutation)
      detected = max(diffs['encoder'][0], diffs['decoder'][0]) > 100 * TOLERANCE
      print(
        f'{method_name:<7} {term_name:<8} {mutation:<11} {diffs["encoder"][0]:>10.2e} '
        f'{diffs["decoder"][0]:>10.2e}  {"yes" if detected else "NO"}'
      )
    print()
    print(
      "mutations' gradients are assembled from each term's parts; assembled vs. "
      'methods.method_loss (the method as declared; every term rerouted at once)'
    )
    header = f'{"method":<7} {"gradient":<10} {"encoder":>10} {"decoder":>10}  result'
    print(header)
    print('-' * len(header))
    for method_name in METHOD_NAMES:
      for what, diffs in assembly_check(method_name).items():
        ok = max(diffs['encoder'][0], diffs['decoder'][0]) <= TOLERANCE
        print(
          f'{method_name:<7} {what:<10} {diffs["encoder"][0]:>10.2e} '
          f'{diffs["decoder"][0]:>10.2e}  {"ok" if ok else "FAIL"}'
        )


if __name__ == '__main__':
  main(sys.argv[1:])
