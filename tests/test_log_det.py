"""The Eq. (6) estimator against exact log-determinants, and the exact diagnostic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from pga_jax import diagnostics, losses
from pga_jax.models import AutoEncoder


@pytest.fixture(autouse=True)
def float64():
  with enable_x64():
    yield


def estimate(h, z, k, eps, seed=0):
  deltas = losses.sample_sphere(jax.random.PRNGKey(seed), (k,) + z.shape, eps)
  return losses.log_det_estimates(h, z, deltas)


def test_linear_map_estimate_is_an_upper_bound_within_monte_carlo_error():
  rs = np.random.RandomState(0)
  for trial in range(5):
    a = jnp.asarray(rs.randn(5, 5))
    exact = np.linalg.slogdet(np.asarray(a))[1]
    z = jnp.asarray(rs.randn(1, 5))
    deltas = losses.sample_sphere(jax.random.PRNGKey(trial), (4000, 1, 5), 1e-2)
    per_draw = 2.5 * jnp.log(jnp.sum((deltas @ a.T) ** 2, -1) / 1e-4)[:, 0]
    est = float(losses.log_det_estimates(lambda v: v @ a.T, z, deltas)[0])
    np.testing.assert_allclose(est, float(jnp.mean(per_draw)), rtol=1e-8)
    stderr = float(jnp.std(per_draw)) / np.sqrt(4000)
    assert est >= exact - 3 * stderr, (trial, est, exact, stderr)
  # For a badly conditioned map the bound is strict (the gap is large).
  ill = jnp.diag(jnp.asarray([10.0, 1.0, 0.1, 1.0, 1.0]))
  est = float(estimate(lambda v: v @ ill.T, jnp.zeros((1, 5)), 4000, 1e-2)[0])
  assert est > np.linalg.slogdet(np.asarray(ill))[1] + 1.0


def test_scaled_orthogonal_map_is_exact_for_any_perturbation():
  q, _ = np.linalg.qr(np.random.RandomState(1).randn(6, 6))
  a = jnp.asarray(2.5 * q)
  exact = np.linalg.slogdet(np.asarray(a))[1]
  est = estimate(lambda v: v @ a.T + 3.0, jnp.asarray(np.random.RandomState(2).randn(4, 6)), 1, 0.3)
  np.testing.assert_allclose(est, exact, rtol=1e-10)


def test_estimate_approaches_exact_as_h_approaches_identity():
  rs = np.random.RandomState(3)
  w = jnp.asarray(rs.randn(4, 4))
  z = jnp.asarray(rs.randn(8, 4))
  errors = []
  for t in (0.5, 0.1, 0.01):
    h = lambda v, t=t: v + t * jnp.tanh(v @ w)
    exact = diagnostics.exact_log_det(h, z)
    est = estimate(h, z, 256, 1e-4)
    errors.append(float(jnp.max(jnp.abs(est - exact))))
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 2e-3 and errors[2] < errors[0] / 20


def test_nonlinear_network_estimate_matches_linearisation_and_bounds_exact():
  rs = np.random.RandomState(4)
  w1, w2 = jnp.asarray(rs.randn(3, 8)), jnp.asarray(rs.randn(8, 3))
  h = lambda v: jnp.tanh(v @ w1) @ w2
  z = jnp.asarray(rs.randn(5, 3) * 0.5)
  deltas = losses.sample_sphere(jax.random.PRNGKey(7), (64, 5, 3), 1e-5)
  est = losses.log_det_estimates(h, z, deltas)
  jac = jax.vmap(jax.jacfwd(h))(z)  # exact Jacobians, (5, 3, 3)
  lin = 1.5 * jnp.mean(
    jnp.log(jnp.sum(jnp.einsum('nij,knj->kni', jac, deltas) ** 2, -1) / jnp.sum(deltas**2, -1)), 0
  )
  np.testing.assert_allclose(est, lin, rtol=1e-4, atol=1e-4)
  exact = diagnostics.exact_log_det(h, z)
  np.testing.assert_allclose(exact, np.linalg.slogdet(np.asarray(jac))[1], rtol=1e-10)
  many = estimate(h, z, 4000, 1e-5)
  assert np.all(np.asarray(many) >= np.asarray(exact) - 0.1)


def test_exact_log_det_against_finite_difference_jacobian():
  rs = np.random.RandomState(5)
  w = jnp.asarray(rs.randn(3, 3))
  h = lambda v: jnp.sin(v @ w) + v
  z = jnp.asarray(rs.randn(2, 3))
  for n in range(2):
    fd = np.stack(
      [(np.asarray(h(z[n] + 1e-6 * e)) - np.asarray(h(z[n] - 1e-6 * e))) / 2e-6 for e in np.eye(3)],
      axis=1,
    )
    np.testing.assert_allclose(
      diagnostics.exact_log_det(h, z)[n], np.linalg.slogdet(fd)[1], rtol=1e-6
    )


@pytest.mark.parametrize('use_bn', [False, True])
def test_model_exact_log_det_matches_single_sample_jacobian(use_bn):
  # conv_tiny: the diagnostic is the same for any network, and in float64
  # conv_mnist's two 6272x1024 dense layers made each case take ~18 s.
  model = AutoEncoder('conv_tiny', 3, 1, use_bn=use_bn)
  params = jax.tree_util.tree_map(
    lambda p: p.astype(jnp.float64), model.init(jax.random.PRNGKey(0))
  )
  reference = jax.random.normal(jax.random.PRNGKey(1), (16, 3), jnp.float64)
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 3), jnp.float64)
  got = diagnostics.model_exact_log_det(model, params, z, reference)
  assert got.shape == (2,) and np.all(np.isfinite(got))
  if not use_bn:  # without batch norm, h of one sample is model.encode_decode
    h = lambda v: model.encode_decode(params, v[None])[0]
    jac = np.stack([np.asarray(jax.jacrev(h)(z[n])) for n in range(2)])
    np.testing.assert_allclose(got, np.linalg.slogdet(jac)[1], rtol=1e-6)
