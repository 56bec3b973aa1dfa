"""Which exact form of a convolution to run, chosen by measurement and cached.

The strided and transposed convolutions can compute the same values and
gradients in several forms (`pga_jax.conv_forms.forms`: XLA's own
convolution and JAX's autodiff of it, a phase decomposition, custom VJPs from
the adjoint convolution). Which is fastest depends on the backend (cuDNN on
GPU, XLA:CPU on CPU, ...), the device, the shape and the dtype, so with
`conv_impl='auto'` it is measured (`measured_form`), not guessed from
thresholds:

- When: at trace time, the first time a layer with a given key is traced.
  The layer's shapes are static there, so the key is exact (batch included),
  and no shape list has to be known when the model is built (the same model
  is traced at the train batch, the evaluation batch, twice the batch for the
  shared encoder pass, ...). Each candidate is compiled as its own small
  `jax.jit` function on concrete random inputs of the key's shape and timed
  outside the surrounding trace (`jax.ensure_compile_time_eval`), so the
  measurement never ends up in the traced program.
- What: the layer's forward pass with its vector-Jacobian product for the
  input and the kernel (what a train step runs). Candidates are compiled
  first, then timed round-robin (`repeats` rounds, one call per candidate per
  round, after one warm-up call) and compared by their median, so load from
  other processes on a shared machine hits every candidate alike. A
  candidate whose warm-up call alone takes `SLOW_FACTOR` times the best one
  is dropped without further calls (some forms are pathologically slow on
  XLA:CPU). Ties go to the earlier candidate. Running the candidates costs
  milliseconds; compiling them dominates (a fraction of a second to a few
  seconds each on a CPU), once per key and machine.
- Key: the op, backend platform, device kind (on CPU: the CPU model and
  count, `device_identity`), jax version, input and kernel shapes, stride
  and dtype (`choice_key`).
- Cache: one JSON file, `conv_impl_v2.json`, in `$PGA_JAX_CACHE_DIR`, else
  `$XDG_CACHE_HOME/pga_jax`, else `~/.cache/pga_jax`; one entry per key:
  the chosen form, every candidate's median milliseconds, the load of other
  processes while it was measured, and how many times the key has been
  measured. Written atomically (a temporary file in the same folder, then
  `os.replace`), so a reader sees the old or the new file, never half of one;
  concurrent writers can at worst lose each other's new entries, which are
  then measured again. A corrupt or unreadable file is replaced with a
  warning; an unwritable folder only costs a warning (the choice is still
  used). `forget(device)` drops a device's entries (`pga benchmark
  --remeasure`).
- Measurements under load are provisional. XLA:CPU's forms differ in how
  many threads they use, so other processes on the same cores slow them
  unequally, and a choice measured on a busy machine can be the wrong one for
  a quiet one (seen: `phase` chosen under load, `xla` 7% faster once quiet).
  The rule: a measurement is *settled* when the load of other processes
  (the 1-minute load average, less this process's one, per usable CPU) was
  at most `QUIET_LOAD` while it ran. A settled entry is never timed again.
  An unsettled one is used, and measured again the next time a process looks
  the key up in the file, until a measurement is settled or the key has been
  measured `MAX_MEASUREMENTS` times (a machine that is always busy keeps its
  last choice). Load does not matter on accelerators, whose kernels do not
  share CPU cores: there every measurement is settled.
- A run's own forms: the trainer records the choices it made in the run
  directory (`conv_forms.json`, `pga_jax.conv_forms.record`) and pins them on
  resume (`pin`), so a resumed run computes with the forms it started with,
  even if the cache changed.
- In-process memo: `_MEMO` maps (cache file, key) to the choice, so a
  process re-tracing the same layer neither re-reads the file nor, if the
  file cannot be written, times the layer again (it would be free to choose
  differently, which is harmless but wasteful). It is the module's only
  mutable state; `choose(..., memo={})` bypasses it.
- Several processes (multi-host SPMD): every form is exact, so a different
  choice on another process would only change speed, not results; but
  multi-controller JAX needs every process to compile the same program
  (collectives in the same order), and the choice is made while tracing,
  where no collective can run to agree on it. So with
  `jax.process_count() > 1` nothing is measured or read from the cache:
  every process takes the first candidate, the same list on every process
  of one backend (XLA's own convolution off CPU). Set `conv_impl` to force
  another form on a pod.

Values never depend on the choice: every candidate is exact up to float
rounding (tests/test_fast_paths.py compares each with `lax` and its autodiff).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pga_jax import storage
from pga_jax.conv_forms import forms

CACHE_ENV = 'PGA_JAX_CACHE_DIR'
FIXED_ENV = 'PGA_JAX_CONV_FORMS'  # 'first': no measurement (see the module docstring)
CACHE_FILE = 'conv_impl_v2.json'
SLOW_FACTOR = 20.0
REPEATS = 5
QUIET_LOAD = 0.5  # other processes' load per CPU up to which a measurement is settled
MAX_MEASUREMENTS = 3

# (cache file path, key) -> chosen form. See the module docstring.
_MEMO: Dict[tuple, str] = {}


def cache_dir(environ=None) -> str:
  """$PGA_JAX_CACHE_DIR, else $XDG_CACHE_HOME/pga_jax, else ~/.cache/pga_jax."""
  environ = os.environ if environ is None else environ
  if environ.get(CACHE_ENV):
    return environ[CACHE_ENV]
  base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'pga_jax')


def cache_path(environ=None) -> str:
  return os.path.join(cache_dir(environ), CACHE_FILE)


def _valid_entry(entry) -> bool:
  return (
    isinstance(entry, dict)
    and isinstance(entry.get('form'), str)
    and isinstance(entry.get('settled'), bool)
    and isinstance(entry.get('measurements'), int)
  )


def read_cache(path: str, warn: bool = True) -> dict:
  """The cached entries {key: {form, settled, measurements, other_load, times_ms}};
  {} (with a warning) if the file is corrupt."""
  try:
    with open(path) as f:
      entries = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as err:
    if warn:
      warnings.warn(
        f'pga_jax: convolution choice cache {path} is unreadable ({err}); rebuilding it'
      )
    return {}
  if not isinstance(entries, dict) or not all(
    isinstance(k, str) and _valid_entry(v) for k, v in entries.items()
  ):
    if warn:
      warnings.warn(
        f'pga_jax: convolution choice cache {path} does not hold '
        '{key: {form, settled, measurements, ...}} entries; rebuilding it'
      )
    return {}
  return entries


def other_load_per_cpu() -> float:
  """The 1-minute load average of other processes per usable CPU: the load
  average less this process's own 1, over the CPU count (0 if unknown)."""
  try:
    load = os.getloadavg()[0]
    count = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return 0.0
  return max(0.0, load - 1.0) / max(count, 1)


def forget(path: Optional[str] = None, device_kind: Optional[str] = None, memo=None) -> int:
  """Drops the cached choices of one device kind (default: this process's
  first device), in the file and the memo, so they are measured afresh.
  Returns how many entries the file held for it."""
  path = cache_path() if path is None else path
  memo = _MEMO if memo is None else memo
  device_kind = device_kind or device_identity()[1]
  entries = read_cache(path)

  def is_mine(key):
    parts = key.split('|')
    return len(parts) > 2 and parts[2] == device_kind

  mine = [key for key in entries if is_mine(key)]
  if mine:
    write_cache(path, {k: v for k, v in entries.items() if k not in mine})
  for cached in [m for m in memo if m[0] == path and is_mine(m[1])]:
    del memo[cached]
  return len(mine)


def write_cache(path: str, entries: dict) -> bool:
  """Atomically replaces the cache file; False (with a warning) if it cannot."""
  try:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    storage.write_json(path, entries, indent=1)
    return True
  except OSError as err:
    warnings.warn(
      f'pga_jax: cannot write the convolution choice cache {path} ({err}); '
      f'set {CACHE_ENV} to a writable folder to keep the measurements'
    )
    return False


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo, else `platform.processor()`) and
  the number of CPUs the process may use, e.g. 'AMD EPYC, 2 CPUs'."""
  name = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.lower().startswith('model name'):
          name = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  name = name or platform.processor() or platform.machine() or 'unknown CPU'
  try:
    count = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    count = os.cpu_count() or 0
  return f'{name}, {count} CPUs'


def device_identity(device=None) -> tuple:
  """(platform, device kind) of `device` (default: the first device).

  XLA:CPU calls every CPU 'cpu'; the CPU model and count are used instead,
  so a cache shared between machines (an NFS home) keeps their choices apart.
  """
  device = device or jax.devices()[0]
  kind = device.device_kind
  if device.platform == 'cpu':
    kind = f'{kind}: {cpu_model()}'
  return device.platform, kind


def choice_key(
  op: str,
  platform: str,
  device_kind: str,
  x_shape: Sequence[int],
  kernel_shape: Sequence[int],
  stride: int,
  dtype,
) -> str:
  """The cache key of one measured choice (a readable string)."""
  return '|'.join(
    [
      op,
      platform,
      device_kind,
      f'jax{jax.__version__}',
      'x' + 'x'.join(map(str, x_shape)),
      'k' + 'x'.join(map(str, kernel_shape)),
      f's{stride}',
      str(np.dtype(dtype)),
    ]
  )


def time_candidates(
  fns: Dict[str, Callable[[], object]],
  repeats: int = REPEATS,
  slow_factor: float = SLOW_FACTOR,
  clock: Callable[[], float] = time.perf_counter,
) -> Dict[str, float]:
  """Median seconds of each zero-argument function (already compiled is best).

  One warm-up call each (also timed: a candidate slower than `slow_factor`
  times the fastest warm-up is dropped), then `repeats` round-robin rounds.
  """
  warm = {}
  for name, fn in fns.items():
    t0 = clock()
    try:
      jax.block_until_ready(fn())
    except Exception as err:  # pylint: disable=broad-except  (e.g. out of memory)
      warnings.warn(
        f'pga_jax: convolution form {name!r} failed while being timed ({err}); not using it'
      )
      warm[name] = float('inf')
      continue
    warm[name] = clock() - t0
  best = min(warm.values())
  kept = [n for n in fns if warm[n] < float('inf') and warm[n] <= slow_factor * best]
  samples = {n: [] for n in kept}
  for _ in range(repeats):
    for name in kept:
      t0 = clock()
      jax.block_until_ready(fns[name]())
      samples[name].append(clock() - t0)
  result = {n: float('inf') for n in fns}
  result.update({n: float(np.median(s)) for n, s in samples.items()})
  return result


def choices_made(memo: Optional[dict] = None) -> Dict[str, str]:
  """{key: form} of every choice this process made (for reports)."""
  memo = _MEMO if memo is None else memo
  return {key: form for (_, key), form in sorted(memo.items())}


def pin(choices: Dict[str, str], path: Optional[str] = None, memo: Optional[dict] = None) -> None:
  """Makes `choose` return these {key: form} in this process, whatever the cache file says.

  A run records the forms it trained with (`choices_made`) and pins them when
  it resumes, so a cache measured again in between (another load, a deleted
  file) cannot change its float rounding. Keys of other devices or jax
  versions never match, so they are measured as usual.
  """
  path = cache_path() if path is None else path
  memo = _MEMO if memo is None else memo
  for key, form in choices.items():
    memo[(path, key)] = form


def unmeasured(environ=None) -> bool:
  """Whether $PGA_JAX_CONV_FORMS asks for first candidates without measuring.

  Any value other than '', 'first' or 'measure' is an error naming the choices.
  """
  value = (os.environ if environ is None else environ).get(FIXED_ENV, '')
  if value not in ('', 'first', 'measure'):
    raise ValueError(
      f"${FIXED_ENV}={value!r}: use 'first' (each layer's first candidate form, "
      "nothing measured) or 'measure' (the default: measured and cached)"
    )
  return value == 'first'


def choose(
  key: str,
  candidates: Sequence[str],
  make_timed: Callable[[str], Callable[[], object]],
  path: Optional[str] = None,
  memo: Optional[dict] = None,
  timer: Optional[Callable[[Dict[str, Callable]], Dict[str, float]]] = None,
  load: Optional[Callable[[], float]] = None,
) -> str:
  """The fastest of `candidates` for `key`: from the memo, a settled entry of
  the cache file, or measured now (then written to the cache).

  make_timed(name) builds a zero-argument function running that candidate on
  concrete inputs; it is only called when the key has to be measured.
  timer: {name: function} -> {name: seconds} (default `time_candidates`).
  load: () -> other processes' load per CPU (default `other_load_per_cpu`;
    only read on CPU, see the module docstring).
  """
  if not candidates:
    raise ValueError(f'no candidate forms for {key}')
  if len(candidates) == 1 or jax.process_count() > 1:
    return candidates[0]  # several processes: see the module docstring
  path = cache_path() if path is None else path
  memo = _MEMO if memo is None else memo
  choice = memo.get((path, key))
  if choice is None and unmeasured():
    choice = candidates[0]
  elif choice is None:
    entry = read_cache(path).get(key)
    usable = entry is not None and entry['form'] in candidates
    final = usable and (entry['settled'] or entry['measurements'] >= MAX_MEASUREMENTS)
    if final:
      choice = entry['form']
    else:
      choice = _measure(key, candidates, make_timed, path, timer, load, entry if usable else None)
  memo[(path, key)] = choice
  return choice


def _measure(key, candidates, make_timed, path, timer, load, previous) -> str:
  """Times the candidates, writes the entry, returns the choice (see `choose`)."""
  parts = key.split('|')
  on_cpu = len(parts) < 2 or parts[1] == 'cpu'  # a key not made by choice_key counts as CPU
  load_before = (load or other_load_per_cpu)() if on_cpu else 0.0
  with jax.ensure_compile_time_eval():
    fns = {}
    for name in candidates:
      try:
        fns[name] = make_timed(name)
      except Exception as err:  # pylint: disable=broad-except  (e.g. out of memory)
        warnings.warn(
          f'pga_jax: convolution form {name!r} failed to compile for timing ({err}); not using it'
        )
    times = (timer or time_candidates)(fns) if fns else {}
  other_load = max(load_before, (load or other_load_per_cpu)() if on_cpu else 0.0)
  finite = [n for n in candidates if times.get(n, float('inf')) < float('inf')]
  if not finite:
    choice = previous['form'] if previous else candidates[0]
    warnings.warn(
      f'pga_jax: no convolution form could be timed for {key}; using {choice!r} (not cached)'
    )
    return choice
  choice = min(finite, key=lambda n: (times[n], candidates.index(n)))
  entry = {
    'form': choice,
    'settled': other_load <= QUIET_LOAD,
    'measurements': (previous['measurements'] if previous else 0) + 1,
    'other_load': round(other_load, 3),
    'times_ms': {n: round(1e3 * times[n], 4) for n in finite},
  }
  # Other processes may have added entries meanwhile.
  write_cache(path, dict(read_cache(path, warn=False), **{key: entry}))
  return choice


def _timed_candidate(op: str, form: str, x_shape, kernel_shape, stride: int, dtype):
  """A compiled zero-argument function: the form's forward pass and its VJP for
  the input and the kernel on fixed random inputs of these shapes."""
  apply = forms.upsample_form if op == 'upsample' else forms.downsample_form
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], x_shape, jnp.float32).astype(dtype)
  kernel = (0.05 * jax.random.normal(keys[1], kernel_shape, jnp.float32)).astype(dtype)
  y_shape = jax.eval_shape(lambda a, b: apply(a, b, stride, form), x, kernel).shape
  cotangent = jax.random.normal(keys[2], y_shape, jnp.float32).astype(dtype)

  def step(x_, kernel_, cotangent_):
    y, vjp = jax.vjp(lambda a, b: apply(a, b, stride, form), x_, kernel_)
    return y, vjp(cotangent_)

  compiled = jax.jit(step).lower(x, kernel, cotangent).compile()
  return lambda: compiled(x, kernel, cotangent)


def measured_form(
  op: str,
  x_shape,
  kernel_shape,
  stride: int,
  dtype,
  path: Optional[str] = None,
  memo: Optional[dict] = None,
) -> str:
  """The fastest form of `op` ('upsample' or 'downsample') for these static
  shapes on the default device, measured once and cached (`choose`)."""
  platform, device_kind = device_identity()
  x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
  candidates = forms.candidate_forms(op, platform, x_shape, kernel_shape, stride)
  key = choice_key(op, platform, device_kind, x_shape, kernel_shape, stride, dtype)
  return choose(
    key,
    candidates,
    lambda form: _timed_candidate(op, form, x_shape, kernel_shape, stride, dtype),
    path=path,
    memo=memo,
  )
