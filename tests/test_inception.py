"""FID Inception (flax) against pytorch-fid's own network, with shared random weights.

Needs the test-only dependencies in requirements-test.txt (torch CPU,
torchvision, pytorch-fid). `tests.torch_reference` checks they are installed
when this file is collected, so a missing install makes it ERROR instead of
being skipped, and imports them at first use.

pytorch-fid's network is built by its own ``pytorch_fid.inception.InceptionV3``
(its resize + normalisation, its FIDInception* blocks); only its weight loader
is patched to return a random state_dict instead of downloading the real one.
The same state_dict goes through our converter CLI into the flax network.
"""

import os
import subprocess
import sys
import types

import numpy as np
import pytest


from tests.torch_reference import Deferred  # noqa: E402  (errors when torch is missing)

torch = Deferred('torch')
F = Deferred('torch.nn.functional')
pfid_inception = Deferred('pytorch_fid.inception')

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from pga_jax.evaluation import convert_inception  # noqa: E402
from pga_jax.evaluation import inception as inc  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-4

# Names of the children of pytorch-fid's four nn.Sequential blocks, in order.
TORCH_BLOCK_LAYOUT = (
  ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'MaxPool_3a_3x3'),
  ('Conv2d_3b_1x1', 'Conv2d_4a_3x3', 'MaxPool_5a_3x3'),
  ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'),
  ('Mixed_7a', 'Mixed_7b', 'Mixed_7c', 'pool3'),
)
# pytorch-fid's output block index -> our block name.
PFID_OUTPUTS = ('MaxPool_3a_3x3', 'MaxPool_5a_3x3', 'Mixed_6e', 'pool3')


def rel_err(ours, ref):
  """max |ours - ref| / max |ref| (robust to the many exact zeros after ReLU)."""
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def nchw_to_nhwc(t):
  a = t.detach().cpu().numpy()
  return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def random_fid_state_dict(seed=0):
  """pytorch-fid FID Inception state_dict with random weights and BN stats.

  Keys/shapes come from the same torchvision Inception-v3 (1008 classes, no
  aux head) that pytorch-fid builds; the FID blocks have identical params.
  Conv weights are He-normal and BN statistics moderate, so activations keep
  a roughly constant scale through the whole depth.
  """
  template = pfid_inception._module()._inception_v3(
    num_classes=1008, aux_logits=False, weights=None
  )
  g = torch.Generator().manual_seed(seed)
  state = {}
  for key, value in template.state_dict().items():
    shape = value.shape
    if key.endswith('num_batches_tracked'):
      state[key] = value.clone()
    elif key.endswith('conv.weight'):
      fan_in = shape[1] * shape[2] * shape[3]
      state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    elif key.endswith('bn.weight'):
      state[key] = 0.5 + torch.rand(shape, generator=g)
    elif key.endswith('bn.bias'):
      state[key] = 0.2 * torch.randn(shape, generator=g)
    elif key.endswith('bn.running_mean'):
      state[key] = 0.2 * torch.randn(shape, generator=g)
    elif key.endswith('bn.running_var'):
      state[key] = 0.5 + 1.5 * torch.rand(shape, generator=g)  # positive
    elif key == 'fc.weight':
      state[key] = torch.randn(shape, generator=g) / shape[1] ** 0.5
    elif key == 'fc.bias':
      state[key] = 0.1 * torch.randn(shape, generator=g)
    else:
      raise KeyError(f"unexpected key in torchvision's Inception: {key}")
  return state


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  """Random torch weights on disk, converted by the converter's command-line
  entry point (`main(argv)`, what `python -m` calls), in this process."""
  from pga_jax.evaluation import convert_inception  # pylint: disable=g-import-not-at-top

  tmp = tmp_path_factory.mktemp('fid_weights')
  pth = str(tmp / 'random_fid_inception.pth')
  npz = str(tmp / 'random_fid_inception.npz')
  state = random_fid_state_dict()
  torch.save(state, pth)
  assert convert_inception.main([f'--torch_weights={pth}', f'--out={npz}']) == 0
  assert os.path.isfile(npz)
  return types.SimpleNamespace(pth=pth, npz=npz, state=state)


@pytest.fixture(scope='module')
def torch_net(weights):
  """pytorch-fid's InceptionV3 (all 4 output blocks) with the random weights."""
  calls = []

  def fake_loader(url, *args, **kwargs):
    calls.append(url)
    return torch.load(weights.pth, map_location='cpu', weights_only=True)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(pfid_inception._module(), 'load_state_dict_from_url', fake_loader)
    net = pfid_inception.InceptionV3(output_blocks=[0, 1, 2, 3])
  assert calls == [pfid_inception.FID_WEIGHTS_URL]
  net.eval()
  # Sanity: it really is the FID variant.
  assert isinstance(net.blocks[2][0], pfid_inception.FIDInceptionA)
  assert isinstance(net.blocks[3][2], pfid_inception.FIDInceptionE_2)
  return net


@pytest.fixture(scope='module')
def params(weights):
  return inc.load_inception(weights.npz)


def run_torch(net, images_nhwc):
  """pytorch-fid forward on images in [-1, 1]; returns (4 outputs, per-layer outputs)."""
  x01 = (np.asarray(images_nhwc, np.float32) + 1.0) / 2.0  # pytorch-fid takes [0, 1]
  x = torch.from_numpy(np.ascontiguousarray(x01.transpose(0, 3, 1, 2)))
  if x.shape[1] == 1:
    x = x.repeat(1, 3, 1, 1)  # what Image.convert('RGB') does for grey
  layers = {}
  handles = []
  for block, names in zip(net.blocks, TORCH_BLOCK_LAYOUT):
    assert len(block) == len(names)
    for module, name in zip(block, names):
      handles.append(
        module.register_forward_hook(
          lambda mod, inp, out, name=name: layers.__setitem__(name, out.detach())
        )
      )
  try:
    with torch.no_grad():
      outs = net(x)
  finally:
    for h in handles:
      h.remove()
  layers = {k: nchw_to_nhwc(v) for k, v in layers.items()}
  layers['pool3'] = layers['pool3'].reshape(layers['pool3'].shape[0], -1)
  outs = [nchw_to_nhwc(o) for o in outs]
  outs[3] = outs[3].reshape(outs[3].shape[0], -1)
  return outs, layers


def random_images(shape, seed):
  """Uniform noise in [-1, 1] with a random contrast and brightness per image."""
  rng = np.random.default_rng(seed)
  per_image = (shape[0],) + (1,) * (len(shape) - 1)
  contrast = rng.uniform(0.3, 0.7, per_image)
  offset = rng.uniform(-0.3, 0.3, per_image)
  x = offset + contrast * rng.uniform(-1.0, 1.0, size=shape)
  return x.astype(np.float32)


@pytest.fixture(scope='module')
def rgb_reference(torch_net):
  """Upsampled RGB input (64x80 -> 299x299) through pytorch-fid."""
  images = random_images((3, 64, 80, 3), seed=1)
  outs, layers = run_torch(torch_net, images)
  return types.SimpleNamespace(images=images, outs=outs, layers=layers)


# ---------------------------------------------------------------------------
# Network vs pytorch-fid
# ---------------------------------------------------------------------------


def test_every_block_matches_pytorch_fid(params, rgb_reference):
  ours = inc.inception_blocks(params, rgb_reference.images[:2])
  assert set(inc.BLOCK_NAMES) <= set(ours)
  errors = {name: rel_err(ours[name], rgb_reference.layers[name][:2]) for name in inc.BLOCK_NAMES}
  bad = {k: v for k, v in errors.items() if not v < RTOL}
  assert not bad, f'blocks differing from pytorch-fid (rel err): {bad}'
  # pytorch-fid's own 4 outputs (64, 192, 768, 2048 dims).
  for idx, name in enumerate(PFID_OUTPUTS):
    assert rel_err(ours[name], rgb_reference.outs[idx][:2]) < RTOL, name
  assert ours['pool3'].shape == (2, inc.FEATURE_DIM)
  assert ours['Mixed_7c'].shape == (2, 8, 8, 2048)


def test_pool3_features_match_pytorch_fid(params, rgb_reference):
  # 3 images with batch_size=2: exercises the padded last batch.
  feats = inc.inception_features(params, rgb_reference.images, batch_size=2)
  ref = rgb_reference.outs[3]
  assert feats.shape == (3, 2048) and feats.dtype == np.float32
  assert rel_err(feats, ref) < RTOL
  np.testing.assert_allclose(feats, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())
  # The test is meaningful: different images give clearly different features.
  assert rel_err(ref[0], ref[1]) > 30 * RTOL
  # An iterable of batches gives the same result as one array.
  chunks = (rgb_reference.images[i : i + 2] for i in range(0, 3, 2))
  np.testing.assert_array_equal(inc.inception_features(params, chunks, batch_size=2), feats)


@pytest.mark.parametrize(
  'shape',
  [
    (2, 320, 310, 1),  # grey, downsampled
    (2, 299, 299, 3),  # already 299x299: no resize
  ],
  ids=['grey_downsample', 'rgb_299'],
)
def test_pool3_other_inputs_match_pytorch_fid(params, torch_net, shape):
  images = random_images(shape, seed=2)
  outs, _ = run_torch(torch_net, images)
  feats = inc.inception_features(params, images, batch_size=2)
  assert rel_err(feats, outs[3]) < RTOL


def test_grey_is_repeated_to_rgb(params):
  grey = random_images((2, 40, 36, 1), seed=3)
  rgb = np.repeat(grey, 3, axis=-1)
  np.testing.assert_array_equal(
    np.asarray(inc.preprocess_images(grey)), np.asarray(inc.preprocess_images(rgb))
  )
  np.testing.assert_array_equal(
    np.asarray(inc.preprocess_images(grey[..., 0])), np.asarray(inc.preprocess_images(rgb))
  )
  f_grey = inc.inception_features(params, grey, batch_size=2)
  f_rgb = inc.inception_features(params, rgb, batch_size=2)
  np.testing.assert_allclose(f_grey, f_rgb, rtol=1e-6, atol=1e-6)
  f_hw = inc.inception_features(params, grey[..., 0], batch_size=2)  # (N, H, W)
  np.testing.assert_array_equal(f_hw, f_grey)


def test_logits_match_fc_of_state_dict(weights, params, rgb_reference):
  ours = inc.inception_blocks(params, rgb_reference.images[:2], include_fc=True)
  ref_pool3 = torch.from_numpy(rgb_reference.outs[3][:2])
  ref = F.linear(ref_pool3, weights.state['fc.weight'], weights.state['fc.bias']).numpy()
  assert ours['logits'].shape == (2, 1008)
  assert rel_err(ours['logits'], ref) < RTOL


# The comparison must catch the FID-specific details: each mutation below
# reintroduces a plausible porting mistake and has to break the agreement.
def _mutate_avg_pool_counts_padding(mp, params):
  mp.setattr(
    inc,
    '_avg_pool_3x3_exclude_pad',
    lambda x: nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True),
  )
  return params


def _mutate_last_pool_is_avg(mp, params):
  mp.setattr(inc, '_max_pool_3x3_same', inc._avg_pool_3x3_exclude_pad)
  return params


def _mutate_legacy_tf_resize(mp, params):
  # TF1's ResizeBilinear without half-pixel centres: source = i * in / out.
  def matrix(n_in, n_out):
    src = np.arange(n_out) * (n_in / n_out)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), lo), 1 - (src - lo))
    np.add.at(m, (np.arange(n_out), hi), src - lo)
    return m

  def resize(x, size):
    x = jax.numpy.einsum('pw,nhwc->nhpc', matrix(x.shape[2], size[1]), x)
    return jax.numpy.einsum('oh,nhwc->nowc', matrix(x.shape[1], size[0]), x)

  mp.setattr(inc, 'bilinear_resize', resize)
  return params


def _mutate_flipped_kernels(mp, params):
  # Convolution instead of cross-correlation (a classic converter mistake).
  def flip(tree):
    return {
      k: (
        flip(v) if isinstance(v, dict) else (v[::-1, ::-1] if k == 'kernel' and v.ndim == 4 else v)
      )
      for k, v in tree.items()
    }

  return flip(params)


@pytest.mark.parametrize(
  'mutate',
  [
    _mutate_avg_pool_counts_padding,
    _mutate_last_pool_is_avg,
    _mutate_legacy_tf_resize,
    _mutate_flipped_kernels,
  ],
  ids=lambda f: f.__name__[len('_mutate_') :],
)
def test_comparison_detects_porting_mistakes(params, rgb_reference, mutate):
  images = rgb_reference.images[:2]
  with pytest.MonkeyPatch.context() as mp:
    mutated = mutate(mp, params)
    # A fresh jit so the (possibly patched) module functions are re-traced.
    fn = jax.jit(lambda p, x: inc.InceptionV3().apply({'params': p}, x, return_blocks=True))
    _, blocks = fn({k: v for k, v in mutated.items() if k != 'fc'}, images)
  worst = max(rel_err(blocks[n], rgb_reference.layers[n][:2]) for n in inc.BLOCK_NAMES)
  assert worst > 10 * RTOL, f'mutation not detected: worst rel err {worst:.3g}'


# ---------------------------------------------------------------------------
# Resize / preprocessing vs torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  'hw', [(28, 28), (32, 32), (64, 80), (299, 299), (320, 310), (512, 512), (1, 7), (300, 1000)]
)
def test_resize_matches_torch_interpolate(hw):
  x = np.random.default_rng(hw[0] * 7 + hw[1]).uniform(0, 1, (2, *hw, 3)).astype(np.float32)
  ref = (
    F.interpolate(
      torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
      size=(299, 299),
      mode='bilinear',
      align_corners=False,
    )
    .numpy()
    .transpose(0, 2, 3, 1)
  )
  ours = np.asarray(inc.bilinear_resize(x, (299, 299)))
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-7)


@pytest.mark.parametrize('hw', [(17, 23), (400, 333)])
def test_resize_to_other_sizes_matches_torch(hw):
  x = np.random.default_rng(0).uniform(0, 1, (1, *hw, 2)).astype(np.float32)
  for out in [(5, 9), (50, 41)]:
    ref = (
      F.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
        size=out,
        mode='bilinear',
        align_corners=False,
      )
      .numpy()
      .transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(np.asarray(inc.bilinear_resize(x, out)), ref, rtol=0, atol=5e-7)


def test_preprocess_matches_pytorch_fid_pipeline():
  images = random_images((2, 45, 61, 3), seed=4)
  x01 = torch.from_numpy(((images + 1.0) / 2.0).transpose(0, 3, 1, 2).copy())
  ref = 2 * F.interpolate(x01, size=(299, 299), mode='bilinear', align_corners=False) - 1
  ours = np.asarray(inc.preprocess_images(images))
  assert ours.shape == (2, 299, 299, 3) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_bad_inputs_are_rejected(params):
  with pytest.raises(TypeError, match='127.5'):
    inc.inception_features(params, np.zeros((2, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match='channels'):
    inc.preprocess_images(np.zeros((2, 32, 32, 4), np.float32))
  with pytest.raises(ValueError, match='batches'):  # a list of HWC images is ambiguous
    inc.inception_features(params, [np.zeros((32, 32, 3), np.float32)])


# ---------------------------------------------------------------------------
# Converter and loading
# ---------------------------------------------------------------------------


def test_converter_layout(weights, params):
  state = weights.state
  k = np.asarray(params['Mixed_6b']['branch7x7_2']['conv']['kernel'])
  w = state['Mixed_6b.branch7x7_2.conv.weight'].numpy()  # (O, I, 1, 7)
  assert w.shape == (128, 128, 1, 7) and k.shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(k, w.transpose(2, 3, 1, 0))
  bn = params['Mixed_7c']['branch_pool']['bn']
  np.testing.assert_array_equal(bn['var'], state['Mixed_7c.branch_pool.bn.running_var'].numpy())
  np.testing.assert_array_equal(bn['mean'], state['Mixed_7c.branch_pool.bn.running_mean'].numpy())
  np.testing.assert_array_equal(bn['scale'], state['Mixed_7c.branch_pool.bn.weight'].numpy())
  np.testing.assert_array_equal(params['fc']['kernel'], state['fc.weight'].numpy().T)
  n_torch = sum(1 for key in state if not key.endswith('num_batches_tracked'))
  assert len(inc.flatten_params(params)) == n_torch == 472


def test_converter_reads_legacy_torch_files(tmp_path, weights, params):
  # The published pytorch-fid file predates torch's zip serialization.
  legacy = str(tmp_path / 'legacy.pth')
  torch.save(weights.state, legacy, _use_new_zipfile_serialization=False)
  out = convert_inception.convert(legacy, str(tmp_path / 'legacy.npz'))
  converted = inc.flatten_params(inc.load_inception(out))
  expected = inc.flatten_params(params)
  assert converted.keys() == expected.keys()
  for key in expected:
    np.testing.assert_array_equal(converted[key], expected[key])


def test_converter_rejects_mismatched_state_dicts(weights):
  state = dict(weights.state)
  good = convert_inception.torch_state_dict_to_flax(state)
  assert 'fc' in good
  # fc is optional; num_batches_tracked is dropped.
  no_fc = {
    k: v
    for k, v in state.items()
    if not k.startswith('fc.') and not k.endswith('num_batches_tracked')
  }
  assert 'fc' not in convert_inception.torch_state_dict_to_flax(no_fc)

  missing = dict(state)
  del missing['Mixed_5b.branch_pool.bn.running_var']
  with pytest.raises(ValueError, match='missing'):
    convert_inception.torch_state_dict_to_flax(missing)

  extra = dict(state)
  extra['AuxLogits.conv0.conv.weight'] = torch.zeros(128, 768, 1, 1)
  with pytest.raises(ValueError, match='unexpected'):
    convert_inception.torch_state_dict_to_flax(extra)

  wrong = dict(state)
  # torchvision's non-FID block widths would not fit, e.g. a 7x7 branch of 160.
  wrong['Mixed_6b.branch7x7_1.conv.weight'] = torch.zeros(160, 768, 1, 1)
  with pytest.raises(ValueError, match='wrong shape'):
    convert_inception.torch_state_dict_to_flax(wrong)

  with pytest.raises(ValueError, match='not part of'):
    convert_inception.torch_state_dict_to_flax({**state, 'foo.bar': torch.zeros(1)})


def test_missing_weights_give_clear_errors(tmp_path, weights):
  missing = str(tmp_path / 'nowhere' / 'fid_inception.npz')
  with pytest.raises(FileNotFoundError) as info:
    inc.load_inception(missing)
  msg = str(info.value)
  assert missing in msg
  assert 'convert_inception' in msg and inc.FID_WEIGHTS_FILENAME in msg

  with pytest.raises(ValueError, match='convert_inception'):
    inc.load_inception(weights.pth)

  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pga_jax.evaluation.convert_inception',
      f'--torch_weights={tmp_path / "absent.pth"}',
      f'--out={tmp_path / "x.npz"}',
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert str(tmp_path / 'absent.pth') in proc.stderr
  assert not (tmp_path / 'x.npz').exists()


def test_pga_jax_imports_without_torch():
  code = (
    'import sys\n'
    "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
    'import pga_jax.evaluation.inception, pga_jax.evaluation.frechet\n'
    'import pga_jax.evaluation.convert_inception\n'
    "print('ok')\n"
  )
  proc = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == 'ok'
