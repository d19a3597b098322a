"""Train (and evaluate) from an ml_collections config.

  python launch/train.py --config=configs/ytb8m.py [--workdir=/tmp/ytb8m]
  python launch/train.py --config=configs/ytb8m.py:tiny --config.batch_size=16 --workdir=...
Multi-host: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every process
(auto-detected on TPU pods, Slurm and Open MPI when omitted).
"""

from absl import app, flags

from mmjax import cli

cli.define_flags("Checkpoints, config.json, metrics.jsonl and TensorBoard events go here.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though the config changes keys "
                  "that change the model, the data, the optimizer or the batch "
                  "(mmjax.train.snapshot lists the keys that may always change).")


def main(argv):
  del argv
  cli.initialize_distributed()
  from mmjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  train_and_evaluate(cli.FLAGS.config, cli.workdir(),
                     allow_config_change=flags.FLAGS.allow_config_change)


if __name__ == "__main__":
  app.run(main)
