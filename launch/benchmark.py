"""Benchmarks at the paper's shapes. Two suites:

ytb8m (default): train step, input pipeline (vs. the TF starter), metrics; needs --config.
  python launch/benchmark.py --config=configs/ytb8m.py          # batch 128, 300 frames
  python launch/benchmark.py --config=configs/ytb8m.py:tiny --batch_size=4 --frames=8 \
      --steps=2 --metric_videos=500 --metric_classes=50 --skip_tf  # seconds
The input pipeline reads the config's data (the synthetic set, written once to $MMJAX_CACHE,
when data.train_pattern is empty). The TensorFlow comparison needs `pip install tensorflow-cpu`
(or `pip install -e .[bench]`); TensorFlow is imported last, after the JAX measurements.

clip: CLIP image tower forward and forward + backward (images/s), and the EmoVCLIP
prompt-tuning train step (clips/s); random weights and pixels, nothing read or written.
  python launch/benchmark.py --suite=clip        # ViT-B/32 at batch 64; :paper, 8 clips x 8 frames
  python launch/benchmark.py --suite=clip --clip_preset=tiny --clip_batch=4 --clip_steps=1 \
      --prompt_config=configs/emovclip.py:tiny --prompt_batch=2 --prompt_frames=2  # seconds

Prints a table, then one JSON line with every number and the hardware description. What each
number times: see mmjax/benchmarks.py and mmjax/benchmarks_clip.py.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "ytb8m", ["ytb8m", "clip"], "Which benchmarks: 'ytb8m' (train step, "
                  "input pipeline, metrics; needs --config) or 'clip' (image tower, prompt "
                  "tuning).")
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]); --suite=ytb8m.",
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

flags.DEFINE_string("clip_preset", "ViT-B/32", "--suite=clip: CLIP preset of the image tower.")
flags.DEFINE_integer("clip_batch", 64, "--suite=clip: images per image-tower call.")
flags.DEFINE_integer("clip_steps", 3, "--suite=clip: timed calls of forward, forward + "
                     "backward and the prompt-tuning step.")
flags.DEFINE_integer("clip_warmup", 1, "--suite=clip: untimed calls after the first, each.")
config_flags.DEFINE_config_file("prompt_config", "configs/emovclip.py:paper",
                                "--suite=clip: prompt-tuning task config (path[:variant]).",
                                lock_config=True)
flags.DEFINE_integer("prompt_batch", 8, "--suite=clip: clips per prompt-tuning step.")
flags.DEFINE_integer("prompt_frames", 8, "--suite=clip: frames per clip (data.num_frames).")
flags.register_multi_flags_validator(
    ["suite", "config"], lambda values: values["suite"] != "ytb8m" or values["config"] is not None,
    message="--config is required with --suite=ytb8m (e.g. --config=configs/ytb8m.py)")


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  if FLAGS.suite == "clip":
    from mmjax import benchmarks_clip
    results = benchmarks_clip.run_clip(
        FLAGS.prompt_config, preset=FLAGS.clip_preset, batch_size=FLAGS.clip_batch,
        steps=FLAGS.clip_steps, warmup=FLAGS.clip_warmup, prompt_batch=FLAGS.prompt_batch,
        prompt_frames=FLAGS.prompt_frames)
    print(benchmarks_clip.report_clip(results))
  else:
    from mmjax import benchmarks
    results = benchmarks.run_all(
        FLAGS.config, batch_size=FLAGS.batch_size, frames=FLAGS.frames, steps=FLAGS.steps,
        warmup=FLAGS.warmup, pipeline_batches=FLAGS.pipeline_batches,
        tf_records=FLAGS.tf_records, metric_videos=FLAGS.metric_videos,
        metric_classes=FLAGS.metric_classes, metric_batch=FLAGS.metric_batch,
        models=[m.strip() for m in FLAGS.models.split(",") if m.strip()], skip_tf=FLAGS.skip_tf)
    print(benchmarks.report(results))
  print(json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
