"""pga_jax.testing: the checks researchers run on a term or a method, and that they can fail.

`check_fast_path` is run on every method by tests/test_fast_paths.py,
`check_routing` by tests/test_methods.py.
"""

import jax
import jax.numpy as jnp
import pytest

from pga_jax import methods, terms, testing


# check_routing passing on every method: tests/test_methods.py
# (test_each_term_reaches_only_the_parameters_it_may_update).


def test_check_routing_names_a_term_that_reaches_the_wrong_side():
  # Eq. 5 depends on the encoder alone; declared as a decoder term, nothing trains it.
  wrong = methods.Term('wrong', terms.nll_encoder, 'decoder', 'nll')
  config = testing.small_config('lpga')
  with pytest.raises(AssertionError, match="term 'wrong' .*updates='decoder'.*no parameters"):
    testing.check_routing(methods.AE.with_terms(wrong), config)


def test_check_routing_checks_a_term_whose_coefficient_is_0():
  # LPGA's zh_rec (Eq. 3 on data codes) beside the AE's one term: cheaper to
  # trace than the whole of LPGA, and the same check of the term.
  zh_rec = next(t for t in methods.LPGA.terms if t.name == 'zh_rec')
  config = testing.small_config('lpga', zh_rec=0.0)  # zh_rec off: still checked
  norms = testing.check_routing(methods.AE.with_terms(zh_rec), config)
  assert set(norms) == {'rec', 'zh_rec'}
  assert norms['zh_rec']['encoder'] > 0 and norms['zh_rec']['decoder'] == 0


def test_check_gradients_passes_a_correct_gradient_and_names_a_wrong_one():
  params = {'a': jnp.arange(3.0), 'b': {'c': jnp.ones((2, 2))}}

  def f(p):
    return jnp.sum(jnp.sin(p['a']) ** 2) + jnp.sum(jnp.maximum(p['b']['c'] - 0.5, 0.0) ** 3)

  assert len(testing.check_gradients(f, params)) == 3

  @jax.custom_vjp
  def doubled_grad(x):
    return jnp.sum(x**2)

  doubled_grad.defvjp(lambda x: (doubled_grad(x), x), lambda x, g: (4 * g * x,))
  with pytest.raises(AssertionError, match='direction 0: gradient . direction'):
    testing.check_gradients(lambda p: doubled_grad(p['a']) + jnp.sum(p['b']['c']), params)


def test_check_gradients_of_a_whole_method_in_float64_through_relu_kinks():
  """The VAE trains both networks on one loss: its gradient is the sum's."""
  config = testing.small_config('vae', conv_impl='xla')
  params, loss = testing.method_loss_fn(config, batch=2)
  results = testing.check_gradients(loss, params, num_directions=2)
  assert all(abs(a) > 0 for a, _, _ in results)


def test_check_gradients_sees_that_lpgas_gradient_is_not_its_sums():
  """LPGA trains each network on its own loss (routing, Eq. 6 holding the
  encoder constant inside h): finite differences of the summed loss differ."""
  config = testing.small_config('lpga', conv_impl='xla', nll=0.015)
  params, loss = testing.method_loss_fn(config, batch=2)
  with pytest.raises(AssertionError, match='best relative error'):
    testing.check_gradients(loss, params, num_directions=1)
