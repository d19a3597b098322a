"""Seed 001's figures and tables of analysis: Figs. 8, 9 and 1, Tables 1-3 (PNG + report.md).

  python launch/report.py --config=configs/ytb8m_correlation.py --workdir=workdir/report
  python launch/report.py --config=configs/ytb8m_correlation.py:tiny --workdir=/tmp/report \
      --weights=1,2 --attention_workdir=workdir/compare_attention_rnn/attention_rnn_cmc

Trains the correlation tower of --config at each --weights value (the negative-class weight,
Fig. 8) into <workdir>/weight_<w> (resumable; a finished run is only evaluated), then, with the
tower at config.correlation.negative_weight: the distribution of its outputs on same-video
evaluation pairs (Fig. 9) and its most confident mistakes both ways (Tables 1-3). With
--attention_workdir (a cross-modal attention-RNN run, e.g. from launch/compare.py
--family=attention_rnn) also the attention of both streams over time for one video (Fig. 1).
Writes fig8_negative_weight.png, fig9_positive_outputs.png, fig1_attention.png and report.md to
--workdir and prints report.md. Needs matplotlib (pip install -e ".[report]"). One process (on
all its local devices).
"""

import os

from absl import app, flags

from mmjax import cli

cli.define_flags("Where the tower runs, the PNGs and report.md go. Default: ./workdir/report.")
flags.DEFINE_list("weights", ["0.5", "1", "2", "4"], "Negative-class weights of Fig. 8.")
flags.DEFINE_string("attention_workdir", "", "A cross-modal attention-RNN run for Fig. 1.")
flags.DEFINE_integer("video", 0, "Fig. 1: the evaluation video (number in file order).")
flags.DEFINE_integer("videos", 512, "Evaluation videos paired for Fig. 9 and Tables 1-3.")
flags.DEFINE_integer("mistakes", 5, "Rows per direction in Tables 1-3.")


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from mmjax import benchmarking
  from mmjax.projects.youtube8m import report
  from mmjax.train import snapshot
  config = cli.FLAGS.config
  root = cli.FLAGS.workdir or os.path.join("workdir", "report")
  weights = sorted({float(w) for w in flags.FLAGS.weights}
                   | {float(config.correlation.negative_weight)})
  sweep = report.sweep_negative_weight(config, root, weights)
  chosen = os.path.join(root, f"weight_{float(config.correlation.negative_weight):g}")
  pairs = report.tower_pairs(config, chosen, flags.FLAGS.videos)
  maps = None
  if flags.FLAGS.attention_workdir:
    maps = report.attention_maps(snapshot.read(flags.FLAGS.attention_workdir),
                                 flags.FLAGS.attention_workdir, flags.FLAGS.video)
  header = (f"# Correlation tower analysis ({config.total_steps} steps of batch "
            f"{config.batch_size} per weight)\n\nHardware: {benchmarking.hardware_description()}."
            f" Fig. 9 and Tables 1-3: the tower of {chosen} on {len(pairs['p'])} pairs of the "
            f"first evaluation videos.")
  paths = report.write_report(root, sweep, pairs, maps, flags.FLAGS.mistakes, header)
  with open(paths[-1], encoding="utf-8") as f:
    print(f.read())
  print("wrote " + ", ".join(paths))


if __name__ == "__main__":
  app.run(main)
