"""Convert pytorch-fid's FID Inception weights to a flax params file.

Usage::

    python -m pga_jax.evaluation.convert_inception \\
        --torch_weights=pt_inception-2015-12-05-6726825d.pth \\
        --out=fid_inception.npz

The input is the torch state_dict that pytorch-fid downloads
(``pt_inception-2015-12-05-6726825d.pth``, see ``inception.FID_WEIGHTS_URL``).
torch is needed only to read it; the output .npz is loaded with
``pga_jax.evaluation.inception.load_inception`` without torch.

Mapping (torch -> flax), names otherwise unchanged:
  ``<layer>.conv.weight`` (O, I, kh, kw) -> ``<layer>/conv/kernel`` (kh, kw, I, O)
  ``<layer>.bn.weight / bias / running_mean / running_var``
      -> ``<layer>/bn/scale / bias / mean / var``
  ``fc.weight`` (1008, 2048) -> ``fc/kernel`` (2048, 1008); ``fc.bias`` -> ``fc/bias``
  ``*.num_batches_tracked`` is dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from pga_jax import storage
from pga_jax.evaluation import inception

_BN_NAMES = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch here
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def torch_state_dict_to_flax(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """pytorch-fid FID Inception state_dict -> nested flax ``params`` dict (numpy).

  Accepts torch tensors or numpy arrays as values. Raises ValueError if the
  keys or shapes do not match the FID Inception network (the ``fc`` layer is
  optional).
  """
  flat: Dict[str, np.ndarray] = {}
  unknown = []
  for key, value in state_dict.items():
    if key.startswith('module.'):  # saved from a DataParallel wrapper
      key = key[len('module.') :]
    parts = key.split('.')
    if parts[-1] == 'num_batches_tracked':
      continue
    if parts[0] == 'fc' and len(parts) == 2:
      if parts[1] == 'weight':
        flat['fc/kernel'] = _to_numpy(value).T
      elif parts[1] == 'bias':
        flat['fc/bias'] = _to_numpy(value)
      else:
        unknown.append(key)
    elif len(parts) >= 3 and parts[-2] == 'conv' and parts[-1] == 'weight':
      # (O, I, kh, kw) -> (kh, kw, I, O)
      flat['/'.join(parts[:-1] + ['kernel'])] = _to_numpy(value).transpose(2, 3, 1, 0)
    elif len(parts) >= 3 and parts[-2] == 'bn' and parts[-1] in _BN_NAMES:
      flat['/'.join(parts[:-1] + [_BN_NAMES[parts[-1]]])] = _to_numpy(value)
    else:
      unknown.append(key)
  if unknown:
    raise ValueError(
      "state_dict has entries that are not part of pytorch-fid's FID Inception "
      f'network ({len(unknown)}): {unknown[:8]}{" ..." if len(unknown) > 8 else ""}'
    )
  params = inception.unflatten_params({k: np.ascontiguousarray(v) for k, v in flat.items()})
  inception.check_params(params)
  return params


def load_torch_state_dict(path: str) -> Mapping[str, Any]:
  """Read a torch state_dict file (needs torch)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"torch weights file not found: {path!r}. Download pytorch-fid's "
      f'{inception.FID_WEIGHTS_FILENAME} from {inception.FID_WEIGHTS_URL} '
      'on a machine with internet access and pass its path as --torch_weights.'
    )
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
      'Converting the FID Inception weights needs PyTorch (only for this step); '
      'install it, e.g. `pip install torch` (a CPU build is enough).'
    ) from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  if (
    isinstance(state, Mapping)
    and 'state_dict' in state
    and isinstance(state['state_dict'], Mapping)
  ):
    state = state['state_dict']
  if not isinstance(state, Mapping):
    raise ValueError(f'{path!r} does not contain a state_dict (got {type(state).__name__})')
  return state


def convert(torch_weights: str, out: str) -> str:
  """Convert ``torch_weights`` (.pth) to ``out`` (.npz). Returns ``out``."""
  torch_weights = os.fspath(torch_weights)
  state_dict = load_torch_state_dict(torch_weights)
  if os.path.basename(torch_weights) == inception.FID_WEIGHTS_FILENAME:
    # Torch hub convention: the name carries the first hex digits of the sha256.
    expected_prefix = inception.FID_WEIGHTS_FILENAME.rsplit('-', 1)[-1].split('.')[0]
    digest = storage.sha256(torch_weights)
    if not digest.startswith(expected_prefix):
      print(
        f'WARNING: sha256 of {torch_weights} is {digest}, expected a prefix of '
        f'{expected_prefix}; the file may be corrupt or not the FID weights.',
        file=sys.stderr,
      )
  params = torch_state_dict_to_flax(state_dict)
  return inception.save_inception_params(params, out)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m pga_jax.evaluation.convert_inception',
    description="Convert pytorch-fid's FID Inception state_dict to a flax .npz params file.",
  )
  parser.add_argument(
    '--torch_weights', required=True, help=f"path to pytorch-fid's {inception.FID_WEIGHTS_FILENAME}"
  )
  parser.add_argument('--out', required=True, help='output .npz path')
  args = parser.parse_args(argv)
  try:
    out = convert(args.torch_weights, args.out)
  except (FileNotFoundError, ImportError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
