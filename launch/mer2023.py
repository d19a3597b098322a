"""Seed 004's Table 1 and Figures 2-4 (mmjax/projects/mer2023/README.md): baseline, EnF, PNAO
and EnF + PNAO on configs/mer2023.py.

  python launch/mer2023.py --workdir=/tmp/mer2023                       # synthetic features
  python launch/mer2023.py --workdir=/tmp/mer2023_digits --variants=avdigits  # AV-digits
  python launch/mer2023.py --workdir=/tmp/mer2023_tiny --variants=tiny  # seconds (tests)
  python launch/mer2023.py --workdir=/tmp/mer2023 --rows=enf,enf_pnao --pnao_rounds=5

Real MER2023 features: add --set data.mertools.features_root=DIR --set
data.mertools.train_labels=FILE --set data.mertools.test_labels=FILE (and --set
data.mertools.features=... for other directory names). Each row trains in its own workdir under
--workdir; table1.json, table1.md and figure2-4.png go there; a killed run resumes.
"""

from absl import app, flags

from mmjax import cli, hostmem
from mmjax.projects.mer2023 import table1

flags.DEFINE_string("workdir", "/tmp/mer2023", "Root of every row's workdir and the results.")
flags.DEFINE_list("rows", list(table1.ROWS), f"Rows to run, from {list(table1.ROWS)}.")
flags.DEFINE_string("variants", "", "configs/mer2023.py variants added to every row.")
flags.DEFINE_integer("pnao_rounds", 0, "PNAO rounds after the first (0: config.pnao.rounds).")
flags.DEFINE_float("pnao_k", 0.0, "PNAO's NAOR k (0: config.pnao.k, 0.05).")
flags.DEFINE_multi_string("set", [], "key=value overrides of every row's config, e.g. "
                          "data.mertools.train_labels=/data/mer2023/train-label.csv.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = table1.run_table(FLAGS.workdir, FLAGS.variants, FLAGS.rows, FLAGS.pnao_rounds,
                             FLAGS.pnao_k, cli.parse_overrides(FLAGS.set))
  print(table1.markdown(results))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
