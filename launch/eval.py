"""Restore a checkpoint and evaluate every split of config.evals (on any device count).

  python launch/eval.py --workdir=/tmp/ytb8m [--step=latest|best|N]   # the run's own config
  python launch/eval.py --config=configs/ytb8m.py --workdir=/tmp/ytb8m [--config.data...=...]
Without --config the run's snapshot (<workdir>/config.json, written when training started) is
used; with it, that config (a difference from the snapshot in a key that changes the model or
the data is logged as a warning).
Prints the metrics ('<split>/<metric>=value') and appends them to <workdir>/metrics.jsonl.
`best` is the checkpoint kept for config.best_metric (e.g. 'eval/gap').
"""

from absl import app, flags

from mmjax import cli, hostmem

cli.define_flags("The training run's workdir (required without --config).",
                 config_required=False)
flags.DEFINE_string("step", "latest", "Checkpoint to evaluate: 'latest', 'best' or a step number.")


def main(argv):
  del argv
  cli.initialize_distributed()
  # pylint: disable=import-outside-toplevel
  from mmjax.train import evaluate_checkpoint
  from mmjax.train.evaluate import format_metrics
  if cli.FLAGS.config is None and not cli.FLAGS.workdir:
    raise app.UsageError("--workdir is required when --config is not given")
  workdir = cli.FLAGS.workdir or cli.workdir()
  metrics = evaluate_checkpoint(cli.FLAGS.config, workdir, flags.FLAGS.step)
  print(format_metrics(metrics))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
