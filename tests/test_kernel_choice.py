"""Convolution forms chosen per backend by measurement.

- every form of the strided and transposed convolutions, and every model
  `conv_impl`, gives lax's values and gradients;
- the choice is measured once per key and then read from the cache file
  (a second call does not time), the key names the device kind, a corrupt
  cache is rebuilt with a warning, writes are atomic;
- off CPU the candidates include XLA's own convolution;
- `conv_impl` is a validated config field that reaches the model.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pga_jax import config as config_lib, conv_forms, methods
from pga_jax.conv_forms import choice, forms
from pga_jax.models import AutoEncoder

DN = ('NHWC', 'HWIO', 'NHWC')


def conv_transpose(x, w):
  return jax.lax.conv_transpose(x, w, (2, 2), 'SAME', dimension_numbers=DN)


def strided_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=DN)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
  """Every test measures into its own cache file, with an empty memo, on a
  machine that looks quiet (every measurement settled) unless it says otherwise;
  measuring is on (the suite's conftest turns it off elsewhere)."""
  monkeypatch.delenv(choice.FIXED_ENV, raising=False)
  monkeypatch.setenv(choice.CACHE_ENV, str(tmp_path / 'cache'))
  monkeypatch.setattr(choice, '_MEMO', {})
  monkeypatch.setattr(choice, 'other_load_per_cpu', lambda: 0.0)
  return choice.cache_path()


def entry(form, settled=True, measurements=1):
  return {'form': form, 'settled': settled, 'measurements': measurements}


def assert_vjp_matches(fn, reference, x, w, rtol=1e-4, atol=1e-4, msg=''):
  expected, ref_vjp = jax.vjp(reference, x, w)
  got, got_vjp = jax.vjp(fn, x, w)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=msg)
  ct = jax.random.normal(jax.random.PRNGKey(9), expected.shape, expected.dtype)
  for a, b in zip(got_vjp(ct), ref_vjp(ct)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=msg)


def assert_form_matches(conv, reference, form, shape):
  """`conv(x, w, 2, form)` (5x5 kernel) has `reference`'s values and gradients at
  `shape` = (size, input channels, output channels)."""
  size, cin, cout = shape
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, cin, cout))
  assert_vjp_matches(lambda a, b: conv(a, b, 2, form), reference, x, w, msg=form)


@pytest.mark.parametrize('form', conv_forms.UPSAMPLE_FORMS + ('auto',))
@pytest.mark.parametrize('shape', [(7, 16, 8), (4, 8, 3), (5, 6, 1)])
def test_every_upsample_form_gives_lax_values_and_gradients(form, shape):
  assert_form_matches(conv_forms.upsample_conv, conv_transpose, form, shape)


@pytest.mark.parametrize('form', conv_forms.DOWNSAMPLE_FORMS + ('auto',))
@pytest.mark.parametrize('shape', [(8, 3, 16), (14, 8, 4)])
def test_every_downsample_form_gives_lax_values_and_gradients(form, shape):
  assert_form_matches(conv_forms.downsample_conv, strided_conv, form, shape)


@pytest.mark.parametrize('form', ['xla', 'phase'])
def test_transposed_conv_forms(form):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 8, 6))
  np.testing.assert_allclose(
    forms.transposed_conv(x, w, 2, form), conv_transpose(x, w), rtol=1e-4, atol=1e-4
  )
  with pytest.raises(ValueError, match='form'):
    forms.transposed_conv(x, w, 2, 'nope')


@pytest.mark.parametrize('conv_impl', ['auto', 'phase', 'adjoint'])
def test_model_gradients_are_the_same_for_every_conv_impl(conv_impl):
  """conv_32 (three strided convs, three transposed) with batch norm, against 'xla'."""
  model = AutoEncoder('conv_32', 8, 3, use_bn=True, conv_impl=conv_impl)
  plain = AutoEncoder('conv_32', 8, 3, use_bn=True, conv_impl='xla')
  params = plain.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 3), minval=-1, maxval=1)

  def loss(m, p):
    return jnp.mean(jnp.square(m.encode_decode(p, m.encode(p['encoder'], x).mean)))

  value, got = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(params)
  want_value, want = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  wants = jax.tree_util.tree_leaves(want)
  scale = max(float(np.abs(w).max()) for w in wants)
  for a, b in zip(jax.tree_util.tree_leaves(got), wants):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)


def test_xla_conv_impl_is_plain_lax_so_forward_mode_works():
  model = AutoEncoder('conv_mnist', 4, 1, conv_impl='xla')
  params = model.init(jax.random.PRNGKey(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 4))
  _, tangent = jax.jvp(lambda z_: model.encode_decode(params, z_), (z,), (jnp.ones_like(z),))
  assert tangent.shape == (2, 4) and bool(jnp.all(jnp.isfinite(tangent)))
  # No custom VJP anywhere: every convolution is a plain lax convolution.
  jaxpr = str(jax.make_jaxpr(lambda z_: model.encode_decode(params, z_))(z))
  assert 'custom_vjp' not in jaxpr


def test_candidates_include_xla_off_cpu_and_first():
  x, k = (64, 7, 7, 128), (5, 5, 128, 64)
  for platform in ('gpu', 'cuda', 'tpu', 'rocm'):
    up = forms.candidate_forms('upsample', platform, x, k, 2)
    assert up[0] == 'xla' and set(up) == {'xla', 'phase', 'adjoint', 'adjoint_xla'}
    down = forms.candidate_forms('downsample', platform, (64, 14, 14, 64), k, 2)
    assert down == ('xla', 'phase')
  cpu = forms.candidate_forms('upsample', 'cpu', x, k, 2)
  assert 'xla' in cpu and cpu[0] != 'xla'
  # The adjoint forms need a kernel at least the stride; downsample a divisible input.
  assert 'adjoint' not in forms.candidate_forms('upsample', 'gpu', x, (1, 1, 128, 64), 2)
  assert forms.candidate_forms('downsample', 'gpu', (2, 7, 7, 3), k, 2) == ('xla',)
  with pytest.raises(ValueError, match='op'):
    forms.candidate_forms('sideways', 'cpu', x, k, 2)


class CountingTimer:
  """A timer that records what it was asked to time and makes `fastest` win."""

  def __init__(self, fastest):
    self.fastest, self.calls = fastest, []

  def __call__(self, fns):
    self.calls.append(sorted(fns))
    for fn in fns.values():
      jax.block_until_ready(fn())  # the candidates really run
    return {n: (0.001 if n == self.fastest else 0.002) for n in fns}


def test_choice_is_measured_once_then_read_from_the_cache(private_cache, monkeypatch):
  timer = CountingTimer('phase')
  monkeypatch.setattr(choice, 'time_candidates', timer)
  args = ('upsample', (2, 4, 4, 8), (5, 5, 8, 3), 2, jnp.float32)
  assert choice.measured_form(*args) == 'phase'
  assert len(timer.calls) == 1 and set(timer.calls[0]) == {'xla', 'phase', 'adjoint', 'adjoint_xla'}
  entries = json.load(open(private_cache))
  ((key, cached),) = entries.items()
  platform, kind = choice.device_identity()
  assert cached['form'] == 'phase' and f'|{platform}|{kind}|' in key and 'x2x4x4x8' in key
  assert (cached['settled'], cached['measurements'], cached['other_load']) == (True, 1, 0.0)
  assert cached['times_ms'] == {'phase': 1.0, 'xla': 2.0, 'adjoint': 2.0, 'adjoint_xla': 2.0}
  # Same process (memo), and a fresh process (empty memo: the file): no timing.
  assert choice.measured_form(*args) == 'phase'
  assert choice.measured_form(*args, memo={}) == 'phase'
  assert len(timer.calls) == 1
  # Another shape or dtype is another key.
  choice.measured_form('upsample', (2, 4, 4, 8), (5, 5, 8, 3), 2, jnp.bfloat16)
  assert len(timer.calls) == 2 and len(json.load(open(private_cache))) == 2


def test_choice_is_keyed_by_device_kind(private_cache, monkeypatch):
  timer = CountingTimer('adjoint')
  monkeypatch.setattr(choice, 'time_candidates', timer)
  args = ('upsample', (2, 4, 4, 8), (5, 5, 8, 3), 2, jnp.float32)
  choice.measured_form(*args)
  platform, kind = choice.device_identity()
  monkeypatch.setattr(choice, 'device_identity', lambda: (platform, 'Another CPU'))
  timer.fastest = 'xla'
  assert choice.measured_form(*args) == 'xla'  # not the other device's 'adjoint'
  assert len(timer.calls) == 2
  kinds = sorted(k.split('|')[2] for k in json.load(open(private_cache)))
  assert kinds == sorted(['Another CPU', kind])


@pytest.mark.parametrize(
  'garbage', ['{"half": "writ', '[1, 2, 3]', '{"k": 3}', '{"k": "phase"}', '\x00\xff']
)
def test_a_corrupt_cache_is_rebuilt_with_a_warning(private_cache, monkeypatch, garbage):
  os.makedirs(os.path.dirname(private_cache), exist_ok=True)
  with open(private_cache, 'w', encoding='latin-1') as f:
    f.write(garbage)
  timer = CountingTimer('phase')
  monkeypatch.setattr(choice, 'time_candidates', timer)
  with pytest.warns(UserWarning, match='rebuilding'):
    form = choice.measured_form('downsample', (2, 8, 8, 3), (5, 5, 3, 4), 2, jnp.float32)
  assert form == 'phase' and len(timer.calls) == 1
  entries = json.load(open(private_cache))  # valid JSON again, with the new entry
  assert [e['form'] for e in entries.values()] == ['phase']
  assert os.listdir(os.path.dirname(private_cache)) == [choice.CACHE_FILE]  # no temp files


def test_an_unwritable_cache_warns_and_still_chooses(tmp_path, monkeypatch):
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  path = str(blocker / 'sub' / choice.CACHE_FILE)
  with pytest.warns(UserWarning, match='cannot write'):
    form = choice.choose(
      'k',
      ('a', 'b'),
      lambda n: lambda: None,
      path=path,
      memo={},
      timer=lambda fns: {'a': 2.0, 'b': 1.0},
    )
  assert form == 'b'


def test_cached_choice_outside_the_candidates_is_measured_again(private_cache):
  choice.write_cache(private_cache, {'k': entry('gone')})
  timed = []
  form = choice.choose(
    'k',
    ('a', 'b'),
    lambda n: lambda: None,
    memo={},
    timer=lambda fns: timed.append(1) or {'a': 1.0, 'b': 2.0},
  )
  assert form == 'a' and timed == [1]


def test_time_candidates_takes_medians_and_drops_pathological_forms():
  ticks = iter(np.cumsum([0, 1.0, 0, 100.0] + [0, 3.0, 0, 2.0, 0, 4.0] + [0] * 10).tolist())
  calls = {'fast': 0, 'slow': 0}

  def make(name):
    return lambda: calls.__setitem__(name, calls[name] + 1)

  times = choice.time_candidates(
    {'fast': make('fast'), 'slow': make('slow')},
    repeats=3,
    slow_factor=20,
    clock=lambda: next(ticks),
  )
  assert times == {'fast': 3.0, 'slow': float('inf')}
  assert calls == {'fast': 4, 'slow': 1}  # warm-up + 3 rounds; slow only warmed up


def test_measurement_at_trace_time_stays_out_of_the_traced_program(monkeypatch):
  timer = CountingTimer('adjoint')
  monkeypatch.setattr(choice, 'time_candidates', timer)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 8, 3))
  fn = lambda a, b: jnp.sum(jnp.sin(conv_forms.upsample_conv(a, b)))
  jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(x, w)
  assert len(timer.calls) == 1
  # The chosen form's program only: no random inputs drawn, one custom VJP.
  text = str(jaxpr)
  assert 'random' not in text and 'threefry' not in text and 'custom_vjp' in text
  got = jax.jit(jax.grad(fn, argnums=(0, 1)))(x, w)
  want = jax.grad(lambda a, b: jnp.sum(jnp.sin(conv_transpose(a, b))), argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  assert len(timer.calls) == 1


def test_cache_dir_honours_the_override_and_xdg(monkeypatch):
  assert choice.cache_dir({choice.CACHE_ENV: '/x', 'XDG_CACHE_HOME': '/y'}) == '/x'
  assert choice.cache_dir({'XDG_CACHE_HOME': '/y'}) == os.path.join('/y', 'pga_jax')
  monkeypatch.setenv('HOME', '/home/someone')
  assert choice.cache_dir({}) == '/home/someone/.cache/pga_jax'


def test_conv_impl_is_a_validated_config_field_that_reaches_the_model():
  config = config_lib.base_config('lpga')
  assert config.conv_impl == 'auto'
  config_lib.validate(config)
  config.conv_impl = 'cudnn'
  with pytest.raises(config_lib.ConfigError, match=r'config\.conv_impl: .*auto.*xla'):
    config_lib.validate(config)
  for impl in ('xla', 'phase', 'adjoint'):
    config.conv_impl = impl
    config_lib.validate(config)
    model = methods.build_model(config, methods.build_method(config), 1)
    assert model.conv_impl == impl
  with pytest.raises(ValueError, match='conv_impl'):
    AutoEncoder('conv_mnist', 4, 1, conv_impl='cudnn')


def test_with_several_processes_every_process_takes_the_first_candidate(private_cache, monkeypatch):
  """No measurement and no cache with several processes: the choice is made
  while tracing, where the processes cannot agree on a measured one."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  choice.write_cache(private_cache, {'k': entry('b')})  # this process's own choice
  for memo in ({}, {}):
    assert (
      choice.choose(
        'k',
        ('a', 'b'),
        lambda n: lambda: None,
        memo=memo,
        timer=lambda fns: pytest.fail('timed with 2 processes'),
      )
      == 'a'
    )


def test_init_measures_nothing(monkeypatch):
  monkeypatch.setattr(
    choice, 'time_candidates', lambda fns: pytest.fail('model.init timed convolution forms')
  )
  model = AutoEncoder('conv_32', 8, 3, conv_impl='auto')
  params = jax.jit(model.init)(jax.random.PRNGKey(0))
  plain = AutoEncoder('conv_32', 8, 3, conv_impl='xla').init(jax.random.PRNGKey(0))
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(plain)):
    np.testing.assert_array_equal(a, b)


def test_a_candidate_that_fails_is_skipped_with_a_warning(private_cache):
  def make(name):
    if name == 'a':
      raise RuntimeError('RESOURCE_EXHAUSTED: out of memory')
    return lambda: None

  with pytest.warns(UserWarning, match="'a' failed"):
    assert choice.choose('k', ('a', 'b'), make, memo={}) == 'b'
  assert json.load(open(private_cache))['k']['form'] == 'b'

  def boom():
    raise RuntimeError('failed at run time')

  with pytest.warns(UserWarning, match="'a' failed while being timed"):
    times = choice.time_candidates({'a': boom, 'b': lambda: None}, repeats=2)
  assert times['a'] == float('inf') and times['b'] < float('inf')


def choose_k(load, fastest, memo=None, key='k|cpu|Some CPU|rest'):
  """choose() of ('a', 'b') at `load`; the timer makes `fastest` win and counts calls."""
  timed = []

  def timer(fns):
    timed.append(1)
    return {n: (1.0 if n == fastest else 2.0) for n in fns}

  form = choice.choose(
    key,
    ('a', 'b'),
    lambda n: lambda: None,
    memo={} if memo is None else memo,
    timer=timer,
    load=lambda: load,
  )
  return form, len(timed)


def test_a_choice_measured_under_load_is_measured_again_until_a_quiet_measurement(private_cache):
  assert choose_k(1.5, 'b') == ('b', 1)
  cached = json.load(open(private_cache))['k|cpu|Some CPU|rest']
  assert (cached['settled'], cached['measurements'], cached['other_load']) == (False, 1, 1.5)
  # Used in this process (memo), measured again by the next process that reads the file.
  memo = {}
  assert choose_k(1.5, 'b', memo) == ('b', 1)
  assert choose_k(1.5, 'b', memo) == ('b', 0)
  assert choose_k(0.2, 'a') == ('a', 1)  # quiet now: this measurement settles it
  cached = json.load(open(private_cache))['k|cpu|Some CPU|rest']
  assert (cached['form'], cached['settled'], cached['measurements']) == ('a', True, 3)
  assert choose_k(2.0, 'b') == ('a', 0)  # settled: never timed again


def test_a_machine_that_is_always_busy_keeps_its_choice_after_max_measurements(private_cache):
  for i in range(choice.MAX_MEASUREMENTS):
    assert choose_k(3.0, 'b') == ('b', 1), i
  assert choose_k(3.0, 'a') == ('b', 0)
  assert json.load(open(private_cache))['k|cpu|Some CPU|rest']['measurements'] == (
    choice.MAX_MEASUREMENTS
  )


def test_load_does_not_unsettle_an_accelerators_measurement(private_cache):
  key = 'k|gpu|Some GPU|rest'
  assert choose_k(5.0, 'b', key=key) == ('b', 1)
  assert json.load(open(private_cache))[key]['settled'] is True
  assert choose_k(5.0, 'a', key=key) == ('b', 0)


def test_forget_drops_one_device_kinds_entries(private_cache):
  memo = {}
  choose_k(0.0, 'b', memo, key='k|cpu|Some CPU|rest')
  choose_k(0.0, 'b', memo, key='k|cpu|Other CPU|rest')
  assert choice.forget(private_cache, 'Some CPU', memo) == 1
  assert list(json.load(open(private_cache))) == ['k|cpu|Other CPU|rest']
  assert list(memo) == [(private_cache, 'k|cpu|Other CPU|rest')]
  assert choose_k(0.0, 'a', memo, key='k|cpu|Some CPU|rest') == ('a', 1)  # measured afresh


def test_other_load_per_cpu_discounts_this_process(monkeypatch):
  monkeypatch.undo()  # the real function
  monkeypatch.setattr(os, 'getloadavg', lambda: (5.0, 0.0, 0.0))
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1})
  assert choice.other_load_per_cpu() == 2.0
  monkeypatch.setattr(os, 'getloadavg', lambda: (0.4, 0.0, 0.0))
  assert choice.other_load_per_cpu() == 0.0


def test_first_forms_on_request_measure_nothing_and_are_remembered(private_cache, monkeypatch):
  monkeypatch.setenv(choice.FIXED_ENV, 'first')
  timed = []
  form = choice.choose('k|cpu|x', ('phase', 'xla'), lambda name: timed.append(name))
  assert form == 'phase' and timed == []
  assert not os.path.exists(private_cache)
  assert choice.choices_made() == {'k|cpu|x': 'phase'}
  # A settled cache entry is not read either: the first candidate, whatever was measured.
  choice.write_cache(private_cache, {'k2|cpu|x': entry('xla')})
  assert choice.choose('k2|cpu|x', ('phase', 'xla'), lambda name: timed.append(name)) == 'phase'
  monkeypatch.setenv(choice.FIXED_ENV, 'measure')
  assert choice.choose('k3|cpu|x', ('phase', 'xla'), lambda name: lambda: None) in ('phase', 'xla')
  assert 'k3|cpu|x' in json.load(open(private_cache))


def test_an_unknown_conv_forms_setting_names_the_choices(monkeypatch):
  monkeypatch.setenv(choice.FIXED_ENV, 'fastest')
  with pytest.raises(ValueError, match="PGA_JAX_CONV_FORMS='fastest': use 'first'"):
    choice.choose('k|cpu|x', ('phase', 'xla'), lambda name: lambda: None)
