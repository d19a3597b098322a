"""Restore a checkpoint and evaluate the eval split (on any device count).

  python launch/eval.py --config=configs/ytb8m.py --workdir=/tmp/ytb8m [--step=N]
Prints the metrics and appends them to <workdir>/metrics.jsonl.
"""

from absl import app, flags

from mmjax import cli

cli.define_flags("The training run's workdir.")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")


def main(argv):
  del argv
  cli.initialize_distributed()
  from mmjax.train import evaluate_checkpoint  # pylint: disable=import-outside-toplevel
  from mmjax.train.trainer import format_metrics  # pylint: disable=import-outside-toplevel
  metrics = evaluate_checkpoint(cli.FLAGS.config, cli.workdir(), flags.FLAGS.step)
  print(format_metrics(metrics))


if __name__ == "__main__":
  app.run(main)
