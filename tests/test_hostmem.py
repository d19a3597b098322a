"""mmjax.hostmem: the launch scripts re-execute themselves with glibc's huge-page tunable."""

import os
import subprocess
import sys

import pytest

from mmjax import hostmem

SCRIPT = """
import os, sys
from mmjax import hostmem
print("before", os.getpid(), os.environ.get("GLIBC_TUNABLES"), flush=True)
hostmem.use_huge_pages()
print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
"""


def _run(tmp_path, **env_changes):
  script = tmp_path / "script.py"
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MMJAX_HUGE_PAGES")}
  env.update(env_changes)
  result = subprocess.run([sys.executable, str(script), "--flag=1", "x"], env=env, check=True,
                          capture_output=True, text=True, timeout=60)
  return [line.split(" ", 2) for line in result.stdout.splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
def test_reexecutes_once_with_the_tunable_and_the_same_arguments(tmp_path):
  lines = _run(tmp_path)
  # Before the re-execution without the variable, then again (same pid: execv) with it.
  assert [line[0] for line in lines] == ["before", "before", "after"]
  assert lines[0][1] == lines[1][1] == lines[2][1]
  assert lines[0][2] == "None" and lines[1][2] == hostmem.TUNABLES
  assert lines[2][2] == f"{hostmem.TUNABLES} ['--flag=1', 'x']"


def test_user_settings_win(tmp_path):
  lines = _run(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
  assert [line[0] for line in lines] == ["before", "after"]  # not re-executed
  assert lines[1][2].startswith("glibc.malloc.arena_max=2 ")
  lines = _run(tmp_path, MMJAX_HUGE_PAGES="0")
  assert [line[0] for line in lines] == ["before", "after"] and lines[1][2].startswith("None ")
