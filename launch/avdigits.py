"""Every row of the AV-digits README table (mmjax/projects/avdigits/README.md): the papers'
training tricks measured on real pictures and spoken digits.

  python launch/avdigits.py --workdir=/tmp/avdigits                 # all rows (resumes)
  python launch/avdigits.py --workdir=/tmp/avdigits --rows=fused,mdrop
  python launch/avdigits.py --workdir=/tmp/avdigits_tiny --variants=tiny   # seconds (tests)

Each row trains in its own workdir under --workdir; results.json and results.md go there.
"""

from absl import app, flags

from mmjax import hostmem
from mmjax.projects.avdigits import benchmark

flags.DEFINE_string("workdir", "/tmp/avdigits", "Root of every row's workdir and the results.")
flags.DEFINE_list("rows", list(benchmark.ROWS), f"Rows to run, from {list(benchmark.ROWS)}.")
flags.DEFINE_string("variants", "", "configs/avdigits.py variants added to every row (tiny).")
flags.DEFINE_integer("pnao_rounds", 5, "PNAO rounds after the first training.")
flags.DEFINE_integer("self_training_rounds", 10, "Self-training rounds after the first.")
flags.DEFINE_integer("folds", 5, "Folds of the k-fold row.")
flags.DEFINE_integer("gblend_steps", 200, "Steps of each offline G-Blend estimation run.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = benchmark.run_rows(
      FLAGS.workdir, FLAGS.rows, FLAGS.variants, pnao_rounds=FLAGS.pnao_rounds,
      self_training_rounds=FLAGS.self_training_rounds, folds=FLAGS.folds,
      gblend_steps=FLAGS.gblend_steps)
  print(benchmark.markdown(results))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
