"""The `pga` command run inside the pytest process, for its usage and input errors.

A `pga` child process costs seconds (Python, TensorFlow and JAX start, a
checkpoint loads) where the test only reads one error line. `pga(*args)` runs
`pga_jax.cli.run()` here instead, and `script(path, *args)` an absl script
of experiments/, as a fresh process would see it:

- `sys.argv` is `['pga', *args]` (`[path, *args]`), the working directory the
  repository's (or `cwd`);
- `cli._exit` (the process's `os._exit`) raises `SystemExit` with its status,
  and `sys.exit` is caught: the status is the exit status a process would have;
  an exception that escapes is shown by `sys.excepthook`, as Python does at the
  top level, with status 1;
- stdout and stderr are captured, absl's console handler included;
- absl's flags start as in a new process: the flags this repository's modules
  defined (an earlier call's subcommand, an experiment script imported by a
  test) are hidden, every flag unparsed, absl's `app.run` initialises again;
- afterwards everything the call changed is put back: the flags (those the
  subcommand defined are removed), the logging handlers, filters and levels
  (the `pga.log` file handler is closed), `warnings` capture, the exception
  hooks, the SIGINT and SIGTERM handlers, the environment, the working
  directory, the convolution forms pinned by a resumed run, and the module
  `ml_collections` loads the config file as.

The result has the attributes of `subprocess.run`'s that the tests read
(`returncode`, `stdout`, `stderr`) and `output` (both), `seconds`, `tail()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import signal
import sys
import threading
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The module name ml_collections loads the --config file as (`sys.modules`).
_CONFIG_MODULE = 'config_config'


class _ProcessExit(SystemExit):
  """`cli._exit(code)` in the pytest process: the process would end here with `code`."""


@dataclasses.dataclass
class Result:
  """What a finished `pga` process shows: exit status, stdout, stderr."""

  args: tuple
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  @property
  def output(self) -> str:
    return self.stdout + self.stderr

  def tail(self, n: int = 4000) -> str:
    return f'--- stdout\n{self.stdout[-n:]}\n--- stderr\n{self.stderr[-n:]}'


def _exit_status(code) -> int:
  """The exit status of a process ended by `SystemExit(code)` (None: 0; text: 1)."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code
  print(code, file=sys.stderr)
  return 1


def _raise_exit(code: int) -> None:
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  raise _ProcessExit(code)


def pga(*args: str, cwd: str = REPO) -> Result:
  """Runs `pga ARGS` in this process to its exit; see the module docstring."""
  from pga_jax import cli  # pylint: disable=g-import-not-at-top

  return _run_to_exit(('pga', *args), cwd, {}, cli.run)


def script(path: str, *args: str, cwd: str = REPO, **env: str) -> Result:
  """Runs `python PATH ARGS` (an absl script of experiments/) in this process
  to its exit, as `pga` does, with `env` added to the environment meanwhile.

  The script's module runs afresh as `__main__` (`runpy`), so its flags are
  defined anew and removed afterwards with everything else the call changed.
  For scripts whose behaviour does not depend on being a process of its own:
  signals sent from outside and the process's exit itself still need one.
  """
  import runpy  # pylint: disable=g-import-not-at-top

  return _run_to_exit((path, *args), cwd, env, lambda: runpy.run_path(path, run_name='__main__'))


def _run_to_exit(argv, cwd: str, env: dict, main) -> Result:
  """Calls `main()` with `sys.argv = argv` under the state a new process has;
  see the module docstring. `argv[0]` is the program."""
  from pga_jax import cli  # pylint: disable=g-import-not-at-top

  stdout, stderr = io.StringIO(), io.StringIO()
  start = time.time()
  with contextlib.ExitStack() as stack:
    stack.enter_context(_logging_restored())
    stack.enter_context(_process_state_restored(cwd))
    stack.enter_context(_fresh_flags())
    stack.enter_context(contextlib.redirect_stdout(stdout))
    stack.enter_context(contextlib.redirect_stderr(stderr))
    stack.enter_context(_absl_console_to(stderr))
    os.environ.update(env)
    sys.argv = list(argv)
    cli._exit = _raise_exit  # pylint: disable=protected-access
    try:
      main()
      returncode = 0
    except SystemExit as done:
      returncode = _exit_status(done.code)
    except Exception:  # pylint: disable=broad-except  (as Python does at the top level)
      sys.excepthook(*sys.exc_info())
      returncode = 1
    for handler in logging.getLogger().handlers:
      handler.flush()
  return Result(
    tuple(argv[1:]), returncode, stdout.getvalue(), stderr.getvalue(), time.time() - start
  )


@contextlib.contextmanager
def _absl_console_to(stream):
  """absl's console handler writes to `stream` meanwhile (it keeps the stderr
  it was created with; a process's is its stderr)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  handler = absl_logging.get_absl_handler().python_handler
  saved = handler.stream
  handler.stream = stream
  try:
    yield
  finally:
    handler.stream = saved


@contextlib.contextmanager
def _logging_restored():
  """Puts back the root logger's handlers and level, absl's logger level and
  handler filters, and `warnings` capture; closes the handlers added meanwhile."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  absl_logger = absl_logging.get_absl_logger()
  absl_level = absl_logger.level
  absl_handler = absl_logging.get_absl_handler()
  absl_filters = list(absl_handler.filters)
  warnings_captured = logging._warnings_showwarning is not None  # pylint: disable=protected-access
  showwarning = warnings.showwarning
  try:
    yield
  finally:
    for handler in list(root.handlers):
      if handler not in handlers:
        root.removeHandler(handler)
        if handler is not absl_handler:
          handler.close()
    for handler in handlers:
      if handler not in root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    absl_logger.setLevel(absl_level)
    absl_handler.filters[:] = absl_filters
    if not warnings_captured:
      logging.captureWarnings(False)
    warnings.showwarning = showwarning


@contextlib.contextmanager
def _process_state_restored(cwd: str):
  """Puts back what a `pga` run sets for its process: argv, the working
  directory, environment variables, exception hooks, SIGINT/SIGTERM handlers,
  `cli._exit`, pinned convolution forms, the loaded config module."""
  from absl import app, command_name  # pylint: disable=g-import-not-at-top
  from pga_jax import cli  # pylint: disable=g-import-not-at-top
  from pga_jax.conv_forms import choice  # pylint: disable=g-import-not-at-top

  argv, directory, environ = sys.argv, os.getcwd(), dict(os.environ)
  hooks = (threading.excepthook, sys.excepthook, sys.unraisablehook)
  main_thread = threading.current_thread() is threading.main_thread()
  signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
  cli_exit = cli._exit  # pylint: disable=protected-access
  memo = dict(choice._MEMO)  # pylint: disable=protected-access
  config_module = sys.modules.get(_CONFIG_MODULE)
  # absl's one-time set-up runs again (the console handler on the root logger,
  # --verbosity); the process keeps its name.
  init_done = (app._run_init.done, app._register_and_parse_flags_with_usage.done)  # pylint: disable=protected-access
  rename = command_name.make_process_name_useful
  app._run_init.done = app._register_and_parse_flags_with_usage.done = False  # pylint: disable=protected-access
  command_name.make_process_name_useful = lambda: None
  os.chdir(cwd)
  try:
    yield
  finally:
    command_name.make_process_name_useful = rename
    app._run_init.done, app._register_and_parse_flags_with_usage.done = init_done  # pylint: disable=protected-access
    if config_module is None:
      sys.modules.pop(_CONFIG_MODULE, None)
    else:
      sys.modules[_CONFIG_MODULE] = config_module
    choice._MEMO.clear()  # pylint: disable=protected-access
    choice._MEMO.update(memo)  # pylint: disable=protected-access
    cli._exit = cli_exit  # pylint: disable=protected-access
    for signum, handler in signals.items():
      signal.signal(signum, handler)
    threading.excepthook, sys.excepthook, sys.unraisablehook = hooks
    for key in set(os.environ) - set(environ):
      del os.environ[key]
    for key, value in environ.items():
      if os.environ.get(key) != value:
        os.environ[key] = value
    os.chdir(directory)
    sys.argv = argv


def _defined_in_repository(flag_values, name: str) -> bool:
  """Whether the module that defined flag `name` is a file of this repository's
  code (pga_jax, experiments, tests), not of a library (a virtual environment
  inside the repository, as `make` creates, holds absl's own flags)."""
  module = sys.modules.get(flag_values.find_module_defining_flag(name) or '')
  path = getattr(module, '__file__', None)
  folders = tuple(os.path.join(REPO, f) + os.sep for f in ('pga_jax', 'experiments', 'tests'))
  return bool(path) and os.path.abspath(path).startswith(folders)


@contextlib.contextmanager
def _fresh_flags():
  """absl's FLAGS as a new `pga` process has them meanwhile, as they were afterwards.

  Hidden: the flags defined by this repository's modules (a subcommand's, an
  experiment script's); kept: those of absl and the libraries. All unparsed.
  Afterwards the registry is put back as it was (the subcommand's flags and
  the config's --config.FIELD flags are gone), with each flag's value.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  fv = flags.FLAGS
  # FlagValues keeps its registry in __dict__ (name -> Flag, per-module lists, parsed).
  registry = {
    key: (
      {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
      if isinstance(value, dict)
      else set(value)
      if isinstance(value, set)
      else value
    )
    for key, value in fv.__dict__.items()
  }
  values = {
    name: (flag.value, flag.present, flag.using_default_value)
    for name, flag in fv._flags().items()  # pylint: disable=protected-access
  }
  for name in list(fv):
    if _defined_in_repository(fv, name):
      delattr(fv, name)
  # FLAGS.unparse_flags() without its logging.info (which gives a root logger
  # without handlers a stderr handler, as logging.basicConfig does).
  for flag in fv._flags().values():  # pylint: disable=protected-access
    flag.unparse()
  fv.__dict__['__flags_parsed'] = False
  try:
    yield
  finally:
    fv.__dict__.update(registry)
    for name, flag in fv._flags().items():  # pylint: disable=protected-access
      if name in values:
        flag.value, flag.present, flag.using_default_value = values[name]
