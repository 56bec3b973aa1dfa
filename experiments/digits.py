"""Digit-like images made here: MNIST-format IDX files of rendered, distorted digits.

MNIST cannot be downloaded on every machine; these images stand in for it
where an experiment needs digit-like data (thin strokes on a black
background, mostly empty borders, ten classes). Each image renders one digit
with Pillow's bundled scalable font at a random size and stroke width,
rotates, shears and blurs it, fits it into a 20x20 box and centres its mass
in 28x28, as MNIST was made. Deterministic given --seed.

  python experiments/digits.py --out=/root/pga_runs/digits --num_train=60000

Then train on them with `--config.dataset=idx --config.data_dir=OUT`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pga_jax.data import idx  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string('out', None, 'Folder for the IDX files.', required=True)
flags.DEFINE_integer('num_train', 60000, 'Training images.')
flags.DEFINE_integer('num_test', 10000, 'Test images.')
flags.DEFINE_integer('seed', 0, 'Random seed.')


def render_digit(digit: int, rs: np.random.RandomState) -> np.ndarray:
  """One 28x28 uint8 image of `digit`."""
  size = int(rs.randint(40, 64))
  font = ImageFont.load_default(size=size)
  canvas = Image.new('L', (96, 96), 0)
  draw = ImageDraw.Draw(canvas)
  draw.text(
    (48, 48),
    str(digit),
    fill=255,
    font=font,
    anchor='mm',
    stroke_width=int(rs.randint(0, 4)),
    stroke_fill=255,
  )
  shear = rs.uniform(-0.3, 0.3)
  canvas = canvas.transform(
    canvas.size, Image.AFFINE, (1, shear, -shear * 48, 0, 1, 0), resample=Image.BILINEAR
  )
  canvas = canvas.rotate(rs.uniform(-15, 15), resample=Image.BILINEAR)
  box = canvas.getbbox()
  if box is None:
    return np.zeros((28, 28), np.uint8)
  glyph = canvas.crop(box)
  scale = 20.0 / max(glyph.size)
  glyph = glyph.resize(
    (max(1, round(glyph.size[0] * scale)), max(1, round(glyph.size[1] * scale))), Image.LANCZOS
  )
  glyph = glyph.filter(ImageFilter.GaussianBlur(rs.uniform(0.0, 0.7)))
  pixels = np.asarray(glyph, np.float64)
  rows, cols = np.indices(pixels.shape)
  mass = pixels.sum() or 1.0
  cy, cx = (rows * pixels).sum() / mass, (cols * pixels).sum() / mass
  top, left = int(round(14 - cy)), int(round(14 - cx))
  out = np.zeros((28, 28))
  h, w = pixels.shape
  ys, xs = slice(max(top, 0), min(top + h, 28)), slice(max(left, 0), min(left + w, 28))
  out[ys, xs] = pixels[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
  return np.clip(out, 0, 255).astype(np.uint8)


def make_digits(n: int, seed: int):
  """(images uint8 (n, 28, 28), labels uint8 (n,))."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 10, size=n).astype(np.uint8)
  return np.stack([render_digit(int(d), rs) for d in labels]), labels


def main(argv):
  del argv
  args = flags.FLAGS
  for split, n, seed in (
    ('train', args.num_train, args.seed),
    ('t10k', args.num_test, args.seed + 1),
  ):
    images, labels = make_digits(n, seed)
    idx.write_uint8_split(args.out, split, images, labels)
    print(f'wrote {n} {split} images to {args.out}')


if __name__ == '__main__':
  app.run(main)
