"""Benchmarks at the paper's shapes: train step, input pipeline (vs. the TF starter), metrics.

  python launch/benchmark.py --config=configs/ytb8m.py          # batch 128, 300 frames
  python launch/benchmark.py --config=configs/ytb8m.py:tiny --batch_size=4 --frames=8 \
      --steps=2 --metric_videos=500 --metric_classes=50 --skip_tf  # seconds

Prints a table, then one JSON line with every number and the hardware description. The input
pipeline reads the config's data (the synthetic set, written once to $MMJAX_CACHE, when
data.train_pattern is empty). The TensorFlow comparison needs `pip install tensorflow-cpu`
(or `pip install -e .[bench]`); TensorFlow is imported last, after the JAX measurements. What
each number times: see mmjax/benchmarks.py.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                lock_config=True)
flags.DEFINE_integer("batch_size", 128, "Global batch for the train step and the pipeline.")
flags.DEFINE_integer("frames", 300, "Frames per video (data.max_frames).")
flags.DEFINE_integer("steps", 5, "Timed train steps per model.")
flags.DEFINE_integer("warmup", 1, "Untimed train steps after the first (compiled) one.")
flags.DEFINE_integer("pipeline_batches", 40, "Timed batches of the grain input pipeline.")
flags.DEFINE_integer("tf_records", 0, "Records read by the TF starter reader (0: "
                     "pipeline_batches * batch_size).")
flags.DEFINE_integer("metric_videos", 128000, "Videos fed to the metrics.")
flags.DEFINE_integer("metric_classes", 3862, "Classes of the metrics' scores.")
flags.DEFINE_integer("metric_batch", 1024, "Videos per metrics update.")
flags.DEFINE_string("models", "transformer,netvlad", "Comma-separated late-fusion models.")
flags.DEFINE_bool("skip_tf", False, "Skip the TensorFlow starter-code comparison.")
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  from mmjax import benchmarks  # pylint: disable=import-outside-toplevel
  results = benchmarks.run_all(
      FLAGS.config, batch_size=FLAGS.batch_size, frames=FLAGS.frames, steps=FLAGS.steps,
      warmup=FLAGS.warmup, pipeline_batches=FLAGS.pipeline_batches, tf_records=FLAGS.tf_records,
      metric_videos=FLAGS.metric_videos, metric_classes=FLAGS.metric_classes,
      metric_batch=FLAGS.metric_batch,
      models=[m.strip() for m in FLAGS.models.split(",") if m.strip()], skip_tf=FLAGS.skip_tf)
  print(benchmarks.report(results))
  print(json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
