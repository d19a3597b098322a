"""Train (and evaluate) from an ml_collections config.

  python launch/train.py --config=configs/ytb8m.py [--workdir=/tmp/ytb8m]
  python launch/train.py --config=configs/ytb8m.py:tiny --config.batch_size=16 --workdir=...
Multi-host: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every process
(auto-detected on TPU pods, Slurm and Open MPI when omitted).

Exit status: 0 when training finished; 75 (mmjax.train.PREEMPTED_EXIT_CODE, EX_TEMPFAIL) after
SIGTERM or SIGINT on any process: every process saved the same step; run the same command again
(requeue) to resume.
"""

import sys

from absl import app, flags

from mmjax import cli, hostmem

cli.define_flags("Checkpoints, config.json, metrics.jsonl and TensorBoard events go here.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though the config changes keys "
                  "that change the model, the data, the optimizer or the batch "
                  "(mmjax.train.snapshot lists the keys that may always change).")


def main(argv):
  del argv
  cli.initialize_distributed()
  # pylint: disable-next=import-outside-toplevel
  from mmjax.train import PREEMPTED_EXIT_CODE, Preempted, train_and_evaluate
  try:
    train_and_evaluate(cli.FLAGS.config, cli.workdir(),
                       allow_config_change=flags.FLAGS.allow_config_change)
  except Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
