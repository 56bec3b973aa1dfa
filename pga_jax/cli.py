"""The `pga` command. Each subcommand is a module in `pga_jax.commands` with
`define_flags()` and `main(argv)`; adding a subcommand is adding a module and
its name here.

  pga train --config=experiments/configs/quickstart.py --workdir=runs/qs [--config.FIELD=VALUE]
  pga sample --workdir=runs/qs --num=100 --out=samples.png   (or .npz)
  pga reconstruct --workdir=runs/qs --num=50 --out=recons.png
  pga interpolate --workdir=runs/qs --num=10 --out=interp.png
  pga evaluate --workdir=runs/qs --num_samples=10000 --features=domain|inception [--json=PATH]
  pga train_classifier --dataset=fashion_mnist   (the domain features of `pga evaluate`)
  pga benchmark --config=experiments/configs/quickstart.py --steps=20

Every subcommand has --help. Exit status: 0 success (or stopped by a signal),
1 a failure during the work, 2 a usage or input error.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
import textwrap

from pga_jax import console, storage

COMMANDS = (
  'train',
  'sample',
  'reconstruct',
  'interpolate',
  'evaluate',
  'train_classifier',
  'benchmark',
)
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull')
USAGE = f'usage: pga {{{",".join(COMMANDS)}}} [--help] [flags]'
_QuietLibraries = console.ProjectOnly  # the old name (experiments/logdet_tracking.py)


def _exit(code: int) -> None:
  """Exits now: flushes the output and the log, and waits for no background thread.

  A failed asynchronous checkpoint write can leave orbax's thread blocked for
  minutes; what it wrote is a temporary directory, never taken for a checkpoint.
  """
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  for handler in std_logging.getLogger().handlers:
    try:
      handler.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)  # pylint: disable=protected-access


def usage_error(message: str) -> None:
  print(f'pga: error: {message}', file=sys.stderr)
  _exit(2)


def _no_command(argv) -> None:
  if argv and argv[0] in HELP_FLAGS:
    print(__doc__.strip() + f'\n\n{USAGE}')
    sys.exit(0)
  if not argv:
    print(__doc__.strip() + f'\n\n{USAGE}', file=sys.stderr)
    sys.exit(2)
  close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  print(
    f'pga: error: unknown command {argv[0]!r}{hint}; commands: {", ".join(COMMANDS)}',
    file=sys.stderr,
  )
  print(USAGE, file=sys.stderr)
  sys.exit(2)


def help_text(command: str, module, names) -> str:
  """The subcommand's docstring and its own flags, with their defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  lines = [module.__doc__.strip(), '', 'flags:']
  wrap = lambda text: textwrap.fill(
    text, width=88, initial_indent='      ', subsequent_indent='      '
  )
  for name in sorted(names):
    flag = flags.FLAGS[name]
    default = '' if flag.default is None else f' (default: {flag.default_as_str})'
    lines += [f'  --{name}', wrap(f'{flag.help}{default}')]
  if 'config' in names:
    lines += [
      '  --config.FIELD=VALUE',
      wrap(
        'Override one field of the config (fields and defaults: pga_jax/config_fields.py, '
        'README "Configs"). --config.method=M brings method M\'s own defaults for the fields '
        'not given (M: a method of pga_jax/methods.py, or your own as module:NAME). '
        '--config.extra_terms=module:NAME[@encoder|@decoder|@both]=COEFFICIENT adds your '
        'loss term (docs/extending.md).'
      ),
    ]
  lines += [
    '  --verbosity=N',
    wrap(
      "Also show the libraries' log lines on the console "
      f'(they always go to {console.LOG_FILE} in the workdir; '
      'for a gs:// workdir, to <temp dir>/pga_jax/<command>.log).'
    ),
    '',
    'Exit status: 0 success or stopped by a signal, 1 a failure during the '
    'work, 2 a usage or input error.',
  ]
  return '\n'.join(lines)


def _config_argument(argv) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return ''


def config_load_message(argv, err: BaseException) -> str:
  """One line for a config file that cannot be loaded or a --config.FIELD that does not exist."""
  text = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
  mistyped = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', text)
  if isinstance(err, (KeyError, AttributeError)):
    name = mistyped.group(2) if mistyped else text.strip('\'"').splitlines()[0].strip('\'"')
    given = next(
      (
        a.split('=', 1)[0]
        for a in argv
        if a.startswith('--config.') and a.split('=', 1)[0].endswith(name)
      ),
      f'--config.{name}',
    )
    hint = (
      f'; did you mean {given[: -len(name)]}{mistyped.group(1)}?'
      if mistyped
      else '; the fields are listed in pga_jax/config.py'
    )
    return f'{given}: the config has no field {name!r}{hint}'
  path = _config_argument(argv)
  if path and not os.path.isfile(path.split(':', 1)[0]):
    return (
      f'--config={path}: no such file (the configs are in experiments/configs/, '
      'e.g. --config=experiments/configs/quickstart.py)'
    )
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  last = lines[-1] if lines else type(err).__name__
  return f'--config={path}: cannot load it ({type(err).__name__}: {last})'


def _apply_method_defaults(flag_values) -> None:
  """--config.method=M: M's reference defaults for the fields not given (see method_override)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib, method_override  # pylint: disable=g-import-not-at-top

  overrides = config_flags.get_override_values(flag_values['config'])
  if 'method' not in overrides:
    return
  path, *config_args = config_flags.get_config_filename(flag_values['config']).split(':', 1)
  spec = importlib.util.spec_from_file_location('pga_config_file', path)
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)  # again: the file as written, without the overrides
  file_config = config_module.get_config(*config_args)
  try:
    changed = method_override.apply(flag_values.config, file_config, overrides)
  except config_lib.ConfigError as err:
    usage_error(str(err))
  if changed:
    values = ', '.join(f'{k}={v!r}' for k, v in sorted(changed.items()))
    print(
      f'pga: method {flag_values.config.method} (the config file has '
      f'{file_config.method}): its reference {values}',
      file=sys.stderr,
    )


def _set_code_dir(flag_values) -> None:
  """A config that names a researcher's own code ('module:NAME' as its method or
  in extra_terms) looks for it next to the config file too (`user_code`)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from pga_jax import user_code  # pylint: disable=g-import-not-at-top

  config = flag_values.config
  if 'code_dir' not in config or config.code_dir is not None:
    return
  if user_code.is_named(config.method) or config.get('extra_terms'):
    path = config_flags.get_config_filename(flag_values['config']).split(':', 1)[0]
    config.code_dir = os.path.dirname(os.path.abspath(path))


def parse_flags(argv):
  """absl's flag parsing, with one-line errors and exit status 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  try:
    rest = f(argv)
    if 'config' in f and f['config'].present:
      f.config.method  # pylint: disable=pointless-statement  (a file that failed to load raises)
  except flags.Error as err:
    usage_error(str(err).strip().splitlines()[0])
  except Exception as err:  # pylint: disable=broad-except  (config files raise anything)
    if 'config' not in f:
      raise
    usage_error(config_load_message(argv[1:], err))
  if len(rest) > 1:
    usage_error(f'unexpected argument {rest[1]!r} (flags are --name=value; see `{rest[0]} --help`)')
  from pga_jax.conv_forms import choice  # pylint: disable=g-import-not-at-top

  try:  # read while tracing, where a bad value would end the run with a traceback
    choice.unmeasured()
  except ValueError as err:
    usage_error(str(err))
  if 'config' in f and f['config'].present:
    _set_code_dir(f)
    _apply_method_defaults(f)
    from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top

    try:  # before anything is created or imported; the run checks again with its devices
      config_lib.validate(f.config)
    except config_lib.ConfigError as err:
      usage_error(str(err))
  return rest


def _workdir(command: str):
  from absl import flags  # pylint: disable=g-import-not-at-top

  workdir = flags.FLAGS['workdir'].value if 'workdir' in flags.FLAGS else None
  if workdir and command == 'train' and not storage.is_remote(workdir):  # gs://: no folders
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError:
      pass  # train says so, naming the directory
  return workdir


def guarded(main, command: str, verbose: bool):
  """main(argv) with the console routing, exit status and no traceback for the user."""

  def run_main(argv):
    log_file = console.log_path(_workdir(command), command)
    console.route_logs(log_file, verbose)
    try:
      main(argv)
    except KeyboardInterrupt:
      print('pga: stopped by a signal.', file=sys.stderr)
      _exit(0)
    except SystemExit as done:
      code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
      if code:
        _exit(code)
      raise
    except Exception as err:  # pylint: disable=broad-except
      console.detail_logger().error('pga %s failed', command, exc_info=True)
      first = (str(err).strip().splitlines() or [''])[0]
      print(
        f'pga: error: {type(err).__name__}: {first} (the traceback is in {log_file})',
        file=sys.stderr,
      )
      _exit(1)

  return run_main


def run():
  """Console-script entry point."""
  argv = sys.argv[1:]
  if not argv or argv[0] not in COMMANDS:
    _no_command(argv)
  command, args = argv[0], argv[1:]
  verbose = console.verbose_requested(args)
  if not verbose:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  storage.configure_environment()  # before fsspec, etils, TensorStore, orbax or tfds read it
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  module = importlib.import_module(f'pga_jax.commands.{command}')
  before = set(flags.FLAGS)
  module.define_flags()
  if any(a in HELP_FLAGS for a in args):
    print(help_text(command, module, set(flags.FLAGS) - before))
    sys.exit(0)
  app.run(
    guarded(module.main, command, verbose), argv=[f'pga {command}'] + args, flags_parser=parse_flags
  )


if __name__ == '__main__':
  run()
