"""mmjax.hostmem: the launch scripts re-execute themselves with glibc's malloc tunables."""

import os
import subprocess
import sys

import pytest

from mmjax import hostmem

SCRIPT = """
import os, sys
from mmjax import hostmem
print("before", os.getpid(), os.environ.get("GLIBC_TUNABLES"), flush=True)
hostmem.tune_malloc()
print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
"""


EXPECTED = "glibc.malloc.hugetlb=1"
KEEP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776:glibc.malloc.arena_max=1"


def _run(tmp_path, **env_changes):
  script = tmp_path / "script.py"
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MMJAX_HUGE_PAGES",
                                                        "MMJAX_KEEP_HEAP")}
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
  assert lines[0][2] == "None" and lines[1][2] == EXPECTED
  assert lines[2][2] == f"{EXPECTED} ['--flag=1', 'x']"


def test_user_settings_win(tmp_path):
  lines = _run(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
  assert [line[0] for line in lines] == ["before", "after"]  # not re-executed
  assert lines[1][2].startswith("glibc.malloc.arena_max=2 ")
  lines = _run(tmp_path, MMJAX_HUGE_PAGES="0")
  assert [line[0] for line in lines] == ["before", "after"] and lines[1][2].startswith("None ")


def test_huge_pages_by_default_keep_heap_on_request():
  assert hostmem.tunables({}) == EXPECTED
  assert hostmem.tunables({"MMJAX_KEEP_HEAP": "1"}) == f"{EXPECTED}:{KEEP}"
  assert hostmem.tunables({"MMJAX_HUGE_PAGES": "0", "MMJAX_KEEP_HEAP": "1"}) == KEEP
  assert hostmem.tunables({"MMJAX_HUGE_PAGES": "0"}) == ""


FAULTS_SCRIPT = """
import resource, numpy as np
def touch():
  a = np.empty(64 << 20, np.float32)  # 256 MB: glibc would mmap it
  a.fill(1.0)
  del a
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
def test_keep_heap_reuses_freed_memory_without_page_faults(tmp_path):
  """A freed 256 MB block is faulted in again under glibc's defaults (640 faults on the 2-core
  AMD EPYC: numpy asks for huge pages); under KEEP_HEAP the second block reuses the first's
  pages (0 faults)."""
  script = tmp_path / "faults.py"
  script.write_text(FAULTS_SCRIPT)

  def second_block_faults(tunable):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunable:
      env["GLIBC_TUNABLES"] = tunable
    return int(subprocess.run([sys.executable, str(script)], env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout)

  assert second_block_faults("") >= 128  # at least one fault per 2 MiB page
  assert second_block_faults(hostmem.KEEP_HEAP) < 16
