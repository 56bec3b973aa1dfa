"""A resumed run computes with the convolution forms it started with.

With conv_impl='auto' each layer's form is measured and cached per machine
(`pga_jax.conv_forms`). The forms are exact but round differently,
so a cache measured again between two sessions (under other load, or after
it was deleted) would make a resumed run drift from an uninterrupted one.
The trainer records its forms in the run directory and pins them on resume.
"""

import json
import os

import jax
import numpy as np
import pytest

from pga_jax import conv_forms, train
from pga_jax.conv_forms import choice
from tests import helpers


class FavouringTimer:
  """Times every candidate list so that the one at `index` wins."""

  def __init__(self, index):
    self.index = index

  def __call__(self, fns):
    names = list(fns)
    winner = names[self.index]
    return {n: (0.001 if n == winner else 0.002) for n in names}


def new_session(monkeypatch, cache_dir, index):
  """A fresh process on a machine whose cache is `cache_dir` and whose timings favour `index`."""
  monkeypatch.delenv(choice.FIXED_ENV, raising=False)
  monkeypatch.setenv(choice.CACHE_ENV, str(cache_dir))
  monkeypatch.setattr(choice, '_MEMO', {})
  monkeypatch.setattr(choice, 'time_candidates', FavouringTimer(index))


def leaves(result):
  return jax.tree_util.tree_leaves(jax.device_get(result.state.params))


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  return helpers.make_idx_dir(tmp_path_factory, num_test=40)


def test_resume_after_the_cache_changed_keeps_the_forms_and_the_bits(
  idx_dir, tmp_path, monkeypatch
):
  new_session(monkeypatch, tmp_path / 'cache1', 0)
  straight = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(tmp_path / 'straight'))
  first_forms = choice.choices_made()

  new_session(monkeypatch, tmp_path / 'cache1', 0)
  half = tmp_path / 'interrupted'
  train.train_and_evaluate(helpers.tiny_config(idx_dir, num_steps=3), str(half))
  recorded = json.load(open(os.path.join(half, conv_forms.RUN_FILE)))
  assert recorded and set(recorded.values()) == set(first_forms.values())

  # Next session: the cache is gone and the machine now favours other forms.
  new_session(monkeypatch, tmp_path / 'cache2', -1)
  resumed = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(half))
  assert resumed.step == straight.step == 6
  for a, b in zip(leaves(straight), leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  for key, form in recorded.items():
    assert choice.choices_made()[key] == form

  # The check can fail: a run with the other forms does not give the same bits.
  new_session(monkeypatch, tmp_path / 'cache3', -1)
  other = train.train_and_evaluate(helpers.tiny_config(idx_dir), str(tmp_path / 'other'))
  other_forms = choice.choices_made()
  assert any(other_forms[k] != f for k, f in recorded.items() if k in other_forms)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(straight), leaves(other)))


def test_an_unreadable_forms_file_only_costs_a_new_choice(tmp_path):
  (tmp_path / conv_forms.RUN_FILE).write_text('{not json')
  assert conv_forms.read_recorded(str(tmp_path)) == {}
  (tmp_path / conv_forms.RUN_FILE).write_text('[1, 2]')
  assert conv_forms.read_recorded(str(tmp_path)) == {}
