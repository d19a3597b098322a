"""The MER2024 system of seed 003 (mmjax/projects/emovclip/README.md): attention fusion over
MERTools features with and without modality dropout and self-training, 5-fold protocol, and
accuracy with a modality missing at test time.

  python launch/mer2024.py --workdir=/tmp/mer2024                        # synthetic features
  python launch/mer2024.py --workdir=/tmp/mer2024_digits --variants=avdigits   # AV-digits
  python launch/mer2024.py --workdir=/tmp/mer2024_tiny --variants=tiny   # seconds (tests)

Each row trains under --workdir/<row>; results.json and results.md go to --workdir. The video
features of the real system come from `python launch/extract_features.py --extractor=emovclip`
(mmjax/features/README.md).
"""

from absl import app, flags

from mmjax import hostmem
from mmjax.projects.emovclip import system

flags.DEFINE_string("workdir", "/tmp/mer2024", "Root of every row's workdir and the results.")
flags.DEFINE_list("rows", list(system.ROWS), f"Rows to run, from {list(system.ROWS)}.")
flags.DEFINE_string("variants", "", "configs/mer2024.py variants added to every row.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  print(system.markdown(system.run_rows(FLAGS.workdir, FLAGS.rows, FLAGS.variants)))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
