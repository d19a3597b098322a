"""Host memory allocation for the launch scripts: glibc's malloc asked for transparent huge
pages, and (opt-in) told to keep freed memory.

Why: XLA's CPU runtime mallocs a step's temporaries in one block on every call (7.2 GB for the
Transformer at the YouTube-8M paper sizes, batch 128 x 300 frames; 1.8 GB at the default sizes)
and frees it at the end. glibc serves blocks that large with a fresh mmap and returns them with
munmap, so the kernel faults in and zeroes the whole block again on every step. Measured on the
2-core AMD EPYC (`mmjax/projects/youtube8m/README.md`, "Speed"):

- `HUGE_PAGES` (glibc.malloc.hugetlb=1): glibc madvises its mappings for transparent huge pages
  (2 MiB), which cuts the faults by about 98 % at the same peak memory. The kernel still zeroes
  every page: `clear_page_erms` was 22 % of the CPU samples of a paper-size Transformer step,
  4-6 s of system CPU time per step.
- `KEEP_HEAP` on top (opt-in, MMJAX_KEEP_HEAP=1): no mmap for allocations (mmap_max=0), so
  they come from the heap; no trimming of the heap's free top (trim_threshold 1 TiB); one
  arena for all threads (arena_max=1: other arenas fall back to mmap for blocks over 64 MB).
  Freed temporaries are reused by the next step without faults: steady paper-size Transformer
  steps of 9.0-9.8 s against 11.1-15.1 s with huge pages alone (NetVLAD's system time 1.1
  against 2.2 s per step). The cost is peak memory: the heap keeps what it once held, and
  once in a few steps a block freed and then split by a smaller allocation no longer fits the
  next step's temporaries, so the heap grows by them once more (peak RSS 15.6 GB against
  9.0 GB; NetVLAD 12.4 against 5.3 GB), and that step takes twice as long. Hence opt-in: for
  CPU training with host memory to spare.

glibc reads its tunables once, when the process starts, so `tune_malloc` re-executes the launch
script with GLIBC_TUNABLES set (before anything heavy is imported); it does nothing when the
variable is already set (the user's choice wins) or off Linux. MMJAX_HUGE_PAGES=0 leaves out
`HUGE_PAGES`, MMJAX_KEEP_HEAP=1 adds `KEEP_HEAP`; neither: no re-execution.
"""

import os
import sys

HUGE_PAGES = "glibc.malloc.hugetlb=1"
KEEP_HEAP = ("glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776:"
             "glibc.malloc.arena_max=1")
# (switch, its default, the tunables it adds when it is "1")
_SWITCHES = (("MMJAX_HUGE_PAGES", "1", HUGE_PAGES), ("MMJAX_KEEP_HEAP", "0", KEEP_HEAP))


def tunables(environ=None) -> str:
  """The GLIBC_TUNABLES value for `environ` (default os.environ): `HUGE_PAGES` unless
  MMJAX_HUGE_PAGES=0, then `KEEP_HEAP` if MMJAX_KEEP_HEAP=1, joined with ':'; '' for neither."""
  environ = os.environ if environ is None else environ
  return ":".join(value for switch, default, value in _SWITCHES
                  if environ.get(switch, default) == "1")


def tune_malloc() -> None:
  """Re-executes this process (same interpreter, same command line) with GLIBC_TUNABLES =
  `tunables()`, unless GLIBC_TUNABLES is set already, `tunables()` is empty, or the platform is
  not Linux. Call it first in a launch script's `if __name__ == "__main__":` block. Returns only
  when no re-execution is needed; other C libraries than glibc ignore the variable."""
  value = tunables()
  if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ or not value:
    return
  os.environ["GLIBC_TUNABLES"] = value
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)
