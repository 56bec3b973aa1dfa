"""Each loss function: values against numpy (float64), gradients by finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64
from jax.test_util import check_grads

from pga_jax import losses

RS = np.random.RandomState(0)


@pytest.fixture(autouse=True)
def float64():
  with enable_x64():
    yield


def arr(*shape):
  return jnp.asarray(RS.randn(*shape), jnp.float64)


def small_h(z):
  """A tiny nonlinear map R^3 -> R^3 (fixed weights) standing in for f(g(z))."""
  w1 = jnp.asarray([[1.0, 0.3, -0.2], [0.1, 0.9, 0.4], [-0.3, 0.2, 1.1]], jnp.float64)
  w2 = jnp.asarray([[0.8, -0.1, 0.0], [0.2, 1.2, -0.3], [0.1, 0.1, 0.7]], jnp.float64)
  return jnp.tanh(z @ w1) @ w2 + 0.5 * z


def test_reconstruction_loss_value_and_gradient():
  a, b = arr(4, 5, 5, 2), arr(4, 5, 5, 2)
  np.testing.assert_allclose(losses.reconstruction_loss(a, b), np.mean((np.asarray(a) - b) ** 2))
  check_grads(losses.reconstruction_loss, (a, b), order=2)


def test_latent_reconstruction_loss_value_and_gradient():
  a, b = arr(6, 3), arr(6, 3)
  np.testing.assert_allclose(
    losses.latent_reconstruction_loss(a, b), np.mean((np.asarray(a) - b) ** 2)
  )
  check_grads(losses.latent_reconstruction_loss, (a, b), order=2)


def test_encoder_nll_is_negative_gaussian_log_density_per_dim():
  z = arr(7, 4)
  from scipy.stats import multivariate_normal

  expected = -np.mean(multivariate_normal(np.zeros(4), np.eye(4)).logpdf(np.asarray(z))) / 4
  np.testing.assert_allclose(losses.encoder_nll(z), expected, rtol=1e-12)
  check_grads(losses.encoder_nll, (z,), order=2)


def test_gaussian_kl_against_closed_form_per_dimension():
  mean, logvar = arr(5, 3), 0.3 * arr(5, 3)
  var = np.exp(np.asarray(logvar))
  expected = np.mean(0.5 * (var + np.asarray(mean) ** 2 - 1 - np.log(var)))
  np.testing.assert_allclose(losses.gaussian_kl(mean, logvar), expected, rtol=1e-12)
  check_grads(losses.gaussian_kl, (mean, logvar), order=2)


def test_variational_latent_reconstruction_value_and_gradient():
  a, b, s = arr(5, 3), arr(5, 3), jnp.abs(arr(3)) + 0.5
  expected = np.mean(((np.asarray(a) - np.asarray(b)) / np.asarray(s)) ** 2)
  np.testing.assert_allclose(losses.variational_latent_reconstruction(a, b, s), expected)
  check_grads(losses.variational_latent_reconstruction, (a, b, s), order=2)
  np.testing.assert_allclose(losses.per_dimension_rms(a), np.sqrt(np.mean(np.asarray(a) ** 2, 0)))


def test_vae_loss_is_mse_plus_beta_kl():
  x, xr, m, lv = arr(3, 4, 4, 1), arr(3, 4, 4, 1), arr(3, 2), 0.2 * arr(3, 2)
  var = np.exp(np.asarray(lv))
  kl = np.mean(0.5 * (var + np.asarray(m) ** 2 - 1 - np.log(var)))
  np.testing.assert_allclose(
    losses.vae_loss(xr, x, m, lv, 0.1), np.mean((np.asarray(xr) - x) ** 2) + 0.1 * kl, rtol=1e-12
  )
  check_grads(lambda a, b, c, d: losses.vae_loss(a, b, c, d, 0.1), (xr, x, m, lv), order=1)


def test_sample_sphere_radius_and_uniform_directions():
  d = losses.sample_sphere(jax.random.PRNGKey(0), (20000, 3), 0.5)
  np.testing.assert_allclose(jnp.linalg.norm(d, axis=-1), 0.5, rtol=1e-10)
  # Uniform on the sphere: mean 0 and second moment radius^2 / H * I.
  np.testing.assert_allclose(jnp.mean(d, 0), 0, atol=0.01)
  np.testing.assert_allclose(d.T @ d / 20000, 0.25 / 3 * np.eye(3), atol=0.005)
  assert losses.sphere_radius(16) == pytest.approx(0.04)


def test_log_det_estimates_value_and_gradient():
  z = arr(4, 3)
  deltas = losses.sample_sphere(jax.random.PRNGKey(1), (2, 4, 3), 0.1)
  out = losses.log_det_estimates(small_h, z, deltas)
  # Independent: loop over samples and perturbations in numpy.
  expected = []
  for n in range(4):
    vals = []
    for k in range(2):
      diff = np.asarray(small_h(z[n] + deltas[k, n])) - np.asarray(small_h(z[n]))
      vals.append(1.5 * np.log(diff @ diff / (np.asarray(deltas[k, n]) @ np.asarray(deltas[k, n]))))
    expected.append(np.mean(vals))
  np.testing.assert_allclose(out, expected, rtol=1e-10)
  check_grads(lambda zz: losses.log_det_estimates(small_h, zz, deltas), (z,), order=1)
  check_grads(
    lambda zz: losses.decoder_nll(losses.log_det_estimates(small_h, zz, deltas), 3), (z,), order=1
  )
  np.testing.assert_allclose(losses.decoder_nll(out, 3), np.mean(expected) / 3, rtol=1e-10)
