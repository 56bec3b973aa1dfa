"""pga_jax.evaluation.class_mix on hand-computed values."""

import numpy as np
import pytest

from pga_jax.evaluation import class_mix


def test_fractions_and_confidence_of_argmax_classes():
  probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
  mix = class_mix.class_mix(probabilities)
  assert mix['fractions'] == [0.5, 0.25, 0.25]
  assert mix['confidence'] == pytest.approx((0.7 + 0.6 + 0.5 + 0.6) / 4)


def test_a_class_nobody_predicts_has_fraction_zero():
  mix = class_mix.class_mix(np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]]))
  assert mix['fractions'] == [1.0, 0.0, 0.0]


def test_total_variation_is_half_the_l1_distance():
  assert class_mix.total_variation([0.5, 0.25, 0.25], [0.25, 0.25, 0.5]) == pytest.approx(0.25)
  assert class_mix.total_variation([1, 0], [0, 1]) == 1.0
  assert class_mix.total_variation([0.3, 0.7], [0.3, 0.7]) == 0.0
