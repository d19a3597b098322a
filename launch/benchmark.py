"""Benchmarks at the papers' shapes. Suites (--suite, comma-separated for several):

youtube8m (default): train step, input pipeline (vs. tuned tf.data), metrics; needs --config.
  python launch/benchmark.py --config=configs/ytb8m.py          # batch 128, 300 frames
  python launch/benchmark.py --config=configs/ytb8m.py --compare_torch --end_to_end_window=4
      # + stock PyTorch steps, the matmul peak and training runs (the README's tables)
  python launch/benchmark.py --config=configs/ytb8m.py:tiny --batch_size=4 --frames=8 \
      --steps=2 --metric_videos=500 --metric_classes=50 --skip_tf  # seconds
The input pipeline reads the config's data (the synthetic set, written once to $MMJAX_CACHE,
when data.train_pattern is empty). The TensorFlow comparison needs `pip install tensorflow-cpu`
(or `pip install -e .[bench]`); TensorFlow is imported last, after the JAX measurements.

clip: CLIP image tower forward and forward + backward (images/s); emovclip: the EmoVCLIP
prompt-tuning train step (clips/s). Random weights and pixels, nothing read or written.
  python launch/benchmark.py --suite=clip,emovclip  # ViT-B/32 at batch 64; :paper, 8 x 8 frames
  python launch/benchmark.py --suite=clip,emovclip --clip_preset=tiny --clip_batch=4 \
      --clip_steps=1 --clip_warmup=0 --prompt_config=configs/emovclip.py:tiny --prompt_batch=2 \
      --prompt_frames=2  # seconds

memotion3: the Memotion 3 train steps of CLIP-text, CLIP-image, CLIP-multi and OSCAR (Table
3's loss; random weights, pixels, regions and tokens), memes/s.
  python launch/benchmark.py --suite=memotion3  # ViT-B/32 at 224 px, d_e 512, batch 32
  python launch/benchmark.py --suite=memotion3 --memotion_config=configs/memotion3.py:tiny \
      --memotion_batch=4 --clip_steps=1 --clip_warmup=0  # seconds

cremad: the CREMA-D shared encoders' train steps (configs/cremad.py; random inputs) at the
paper's 3D multimodal input, 135 x 224 x 448 x 3 per clip (I3D, Simple3D; VideoMAE: 32 x 224 x
224 x 3, with --cremad_cells), clips/s, compile time and memory (XLA's compiled peak and the
process RSS), with the 2D and 3D preprocessing throughput (clips/s) on synthetic clips in
CREMA-D's layout.
  python launch/benchmark.py --suite=cremad  # I3D, Simple3D; batch 1, 12 clips with 2 workers
  python launch/benchmark.py --suite=cremad --cremad_config=configs/cremad.py:tiny \
      --cremad_clips=2 --cremad_workers=1 --cremad_steps=1  # seconds

features: the HuBERT forward pass at HuBERT-large's shapes (random weights; utterances/s and
seconds of audio per second, 8 x 10 s) and the whole CLIP frame extraction of
launch/extract_features.py (synthetic .npy clips read, preprocessed, embedded on all local
devices and written; clips/s and frames/s; --clip_preset).
  python launch/benchmark.py --suite=features  # HuBERT-large 8 x 10 s; ViT-B/32, 32 clips x 8
  python launch/benchmark.py --suite=features --hubert_preset=tiny --hubert_seconds=1 \
      --hubert_batch=2 --clip_preset=tiny --features_clips=4 --features_batch=2 --clip_steps=1 \
      --clip_warmup=0  # seconds

mer: the MER fusion train steps at the papers' utterance-level feature sizes (random features
and labels): MER2023 (configs/mer2023.py: three attention fusions of HuBERT-large L18/L19/L20,
2048 each, with MANet, 1024, and ResNet-50, 4096; joint decoders, AWL) and MER2024
(configs/mer2024.py:mdrop: one attention fusion of audio 2048, image 768, text 5120 and video
1024, modality dropout 0.3), examples/s, against the same MER2023 model in eager PyTorch (Adam,
as many threads as cores, or --mer_torch_threads) on the same batches: examples/s and mmjax /
torch (of the mean and of the fastest steps). Millisecond steps: on a shared CPU, other
processes move the numbers, torch's most (the header's load average says how busy).
  python launch/benchmark.py --suite=mer  # batch 32, hidden 128, embed 64, 50 steps after 5
  python launch/benchmark.py --suite=mer --mer_feature_dim=16 --mer_batch=4 --mer_steps=1 \
      --mer_warmup=0  # under a minute, mostly compiling MER2023's step (about 20 s on 2 cores)

collectives: the collectives (kind, count, bytes per device) that XLA puts in the sharded train
steps of the --models (configs/ytb8m.py, --batch_size x --frames) and of CLIP contrastive
pretraining (configs/clip_pretrain.py: its tiny CLIP unless --clip_preset is given; --clip_batch)
on a 'data' 4 x 'model' 2 mesh, compiled, not run. With fewer than 8 devices it re-runs itself
on 8 fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).
  python launch/benchmark.py --suite=collectives  # batch 128 x 300 frames; CLIP batch 64

Prints, per suite, a table, then one JSON line with every number, the suite and the hardware
description. --json=FILE also appends one JSON record per measurement to FILE (JSON Lines: name,
unit, value, hardware, versions, commit, suite, timestamp; see mmjax.benchmarking.to_records):
  python launch/benchmark.py --suite=clip --clip_preset=tiny --clip_batch=4 --clip_steps=1 \
      --json=/tmp/mmjax_bench/records.jsonl
What each number times: see mmjax/benchmarking.py and the suites' modules,
mmjax/projects/{youtube8m,memotion3,emovclip,cremad,mer2023}/benchmark.py,
mmjax/features/benchmark.py, mmjax/projects/mer2023/torch_reference.py,
mmjax/projects/memotion3/step_benchmark.py and
mmjax/projects/youtube8m/collectives_benchmark.py.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from mmjax import hostmem

SUITES = ("youtube8m", "clip", "emovclip", "collectives", "memotion3", "cremad", "features",
          "mer")

FLAGS = flags.FLAGS
flags.DEFINE_list("suite", ["youtube8m"], "Comma-separated benchmarks, run in this order: "
                  "'youtube8m' (train step, input pipeline, metrics; needs --config), 'clip' "
                  "(CLIP image tower), 'emovclip' (prompt-tuning train step), 'collectives' "
                  "(the collectives of the sharded train steps), 'memotion3', 'cremad', "
                  "'features' (HuBERT forward, CLIP frame extraction), 'mer' (MER fusion train "
                  "steps vs. PyTorch).")
flags.DEFINE_string("json", None, "Append one JSON record per measurement to this file (JSON "
                    "Lines; parent folders are created).")
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]); "
                                "--suite=youtube8m.", lock_config=True)
flags.DEFINE_integer("batch_size", 128, "Global batch for the train step and the pipeline.")
flags.DEFINE_integer("frames", 300, "Frames per video (data.max_frames).")
flags.DEFINE_integer("steps", 5, "Timed train steps per model.")
flags.DEFINE_integer("warmup", 1, "Untimed train steps after the first (compiled) one.")
flags.DEFINE_integer("pipeline_batches", 100, "Timed batches of the input pipelines (ours and "
                     "tf.data).")
flags.DEFINE_integer("tf_records", 0, "Records read by the TF starter reader (0: "
                     "pipeline_batches * batch_size).")
flags.DEFINE_integer("metric_videos", 128000, "Videos fed to the metrics.")
flags.DEFINE_integer("metric_classes", 3862, "Classes of the metrics' scores.")
flags.DEFINE_integer("metric_batch", 1024, "Videos per metrics update.")
flags.DEFINE_string("models", "transformer,netvlad", "Comma-separated models: a family "
                    "(transformer, netvlad, attention_rnn: late fusion) or a row of seed 001, "
                    "<family>_<fusion> (fusion early, late, cmg or cmc), e.g. netvlad_cmc.")
flags.DEFINE_bool("skip_tf", False, "Skip the TensorFlow input-pipeline comparisons.")
flags.DEFINE_bool("compare_torch", False, "--suite=youtube8m: also time a stock PyTorch eager "
                  "float32 implementation of each model (same layer sizes, Adam) and the float32 "
                  "matmul peak; needs torch (pip install -e .[bench]).")
flags.DEFINE_integer("end_to_end_window", 0, "--suite=youtube8m: also train each model for 3 "
                     "windows of this many steps on the config's data and report examples/s "
                     "over steady windows (0: skip).")

flags.DEFINE_string("clip_preset", "ViT-B/32", "--suite=clip,collectives,features: CLIP preset "
                    "of the image tower (clip, features) and, when given, of the contrastive "
                    "train step (collectives; default: configs/clip_pretrain.py's tiny CLIP).")
flags.DEFINE_integer("clip_batch", 64, "--suite=clip,collectives: images per image-tower call; "
                     "image-text pairs per contrastive train step.")
flags.DEFINE_integer("clip_steps", 3, "--suite=clip,emovclip,features: timed calls of forward, "
                     "forward + backward, the prompt-tuning step and the HuBERT forward.")
flags.DEFINE_integer("clip_warmup", 1, "--suite=clip,emovclip,features: untimed calls after "
                     "the first, each.")
config_flags.DEFINE_config_file("prompt_config", "configs/emovclip.py:paper",
                                "--suite=emovclip: prompt-tuning task config (path[:variant]).",
                                lock_config=True)
flags.DEFINE_integer("prompt_batch", 8, "--suite=emovclip: clips per prompt-tuning step.")
flags.DEFINE_integer("prompt_frames", 8, "--suite=emovclip: frames per clip (data.num_frames).")
config_flags.DEFINE_config_file("memotion_config", "configs/memotion3.py:paper",
                                "--suite=memotion3: Memotion task config (path[:variant]).",
                                lock_config=True)
flags.DEFINE_list("memotion_models", ["text", "image", "multi", "oscar"],
                  "--suite=memotion3: the train steps of CLIP-text, CLIP-image, CLIP-multi "
                  "and/or OSCAR.")
flags.DEFINE_integer("memotion_batch", 32, "--suite=memotion3: memes per train step.")
flags.DEFINE_string("cremad_config", "configs/cremad.py:paper", "--suite=cremad: the config "
                    "file and its variants (path[:variants]); each cell is added to the variants "
                    "(':paper': the paper's input sizes and models; ':tiny': seconds).")
flags.DEFINE_list("cremad_cells", ["i3d_multimodal", "simple3d_multimodal"],
                  "--suite=cremad: the cells (<encoder>_<modality>) whose train steps are timed "
                  "(add videomae_multimodal where memory allows: its batch-1 step at 32 x 224 x "
                  "224 needs about 20 GiB on a CPU).")
flags.DEFINE_integer("cremad_batch", 1, "--suite=cremad: clips per train step (3D CNNs).")
flags.DEFINE_integer("cremad_videomae_batch", 1, "--suite=cremad: clips per VideoMAE step.")
flags.DEFINE_integer("cremad_clips", 12, "--suite=cremad: synthetic clips preprocessed (2D and "
                     "3D; 0: no preprocessing).")
flags.DEFINE_integer("cremad_workers", 2, "--suite=cremad: preprocessing processes.")
flags.DEFINE_integer("cremad_steps", 2, "--suite=cremad: timed train steps per cell (after the "
                     "first, compiled one; no warm-up steps).")
flags.DEFINE_enum("hubert_preset", "large", ["large", "base", "tiny"], "--suite=features: "
                  "HuBERT shape (random weights): 'large' (24 layers, width 1024, 16 heads, FFN "
                  "4096, LayerNorm conv stack, pre-norm), 'base' or 'tiny' (seconds).")
flags.DEFINE_float("hubert_seconds", 10.0, "--suite=features: seconds of 16 kHz audio per "
                   "utterance.")
flags.DEFINE_integer("hubert_batch", 8, "--suite=features: utterances per HuBERT forward call.")
flags.DEFINE_integer("features_clips", 32, "--suite=features: synthetic clips extracted by the "
                     "CLIP frame extraction.")
flags.DEFINE_integer("features_frames", 8, "--suite=features: frames sampled per clip.")
flags.DEFINE_integer("features_batch", 8, "--suite=features: clips per CLIP extraction batch "
                     "(a multiple of the local devices).")
flags.DEFINE_integer("mer_batch", 32, "--suite=mer: examples per train step (JAX and torch).")
flags.DEFINE_integer("mer_steps", 50, "--suite=mer: timed train steps per system and of torch.")
flags.DEFINE_integer("mer_warmup", 5, "--suite=mer: untimed train steps after the first, each.")
flags.DEFINE_integer("mer_feature_dim", 0, "--suite=mer: 0: the papers' feature sizes; N: every "
                     "feature N wide.")
flags.DEFINE_integer("mer_hidden", 0, "--suite=mer: model.hidden (0: the configs', 128).")
flags.DEFINE_integer("mer_embed", 0, "--suite=mer: model.embed (0: the configs', 64).")
flags.DEFINE_integer("mer_torch_threads", 0, "--suite=mer: torch's intra-op threads (0: the cores "
                     "available, as XLA's CPU client uses).")
flags.register_validator(
    "suite", lambda suites: bool(suites) and set(suites) <= set(SUITES)
    and len(set(suites)) == len(suites),
    message=f"--suite: a comma-separated list of distinct names from {', '.join(SUITES)}")
flags.register_multi_flags_validator(
    ["suite", "config"],
    lambda values: "youtube8m" not in values["suite"] or values["config"] is not None,
    message="--config is required with --suite=youtube8m (e.g. --config=configs/ytb8m.py)")


def run_suite(name: str):
  """Runs one suite with the flags; returns (its module, its results)."""
  # pylint: disable=import-outside-toplevel
  if name == "youtube8m":
    from mmjax.projects.youtube8m import benchmark
    return benchmark, benchmark.run_suite(
        FLAGS.config, batch_size=FLAGS.batch_size, frames=FLAGS.frames, steps=FLAGS.steps,
        warmup=FLAGS.warmup, pipeline_batches=FLAGS.pipeline_batches,
        tf_records=FLAGS.tf_records, metric_videos=FLAGS.metric_videos,
        metric_classes=FLAGS.metric_classes, metric_batch=FLAGS.metric_batch,
        models=[m.strip() for m in FLAGS.models.split(",") if m.strip()], skip_tf=FLAGS.skip_tf,
        compare_torch=FLAGS.compare_torch, end_to_end_window=FLAGS.end_to_end_window)
  if name == "clip":
    from mmjax.projects.memotion3 import benchmark
    return benchmark, benchmark.run_suite(preset=FLAGS.clip_preset, batch_size=FLAGS.clip_batch,
                                          steps=FLAGS.clip_steps, warmup=FLAGS.clip_warmup)
  if name == "collectives":
    from mmjax.projects.youtube8m import collectives_benchmark
    return collectives_benchmark, collectives_benchmark.run_suite(
        models=[m.strip() for m in FLAGS.models.split(",") if m.strip()],
        batch_size=FLAGS.batch_size, frames=FLAGS.frames, clip_batch=FLAGS.clip_batch,
        clip_preset=FLAGS.clip_preset if FLAGS["clip_preset"].present else None)
  if name == "memotion3":
    from mmjax.projects.memotion3 import step_benchmark
    return step_benchmark, step_benchmark.run_suite(
        FLAGS.memotion_config, models=FLAGS.memotion_models, batch_size=FLAGS.memotion_batch,
        steps=FLAGS.clip_steps, warmup=FLAGS.clip_warmup)
  if name == "cremad":
    from mmjax.projects.cremad import benchmark
    return benchmark, benchmark.run_suite(
        FLAGS.cremad_config, cell_names=FLAGS.cremad_cells, batch_size=FLAGS.cremad_batch,
        videomae_batch=FLAGS.cremad_videomae_batch, steps=FLAGS.cremad_steps, warmup=0,
        num_clips=FLAGS.cremad_clips, workers=FLAGS.cremad_workers)
  if name == "features":
    from mmjax.features import benchmark
    return benchmark, benchmark.run_suite(
        hubert_preset=FLAGS.hubert_preset, hubert_batch=FLAGS.hubert_batch,
        hubert_seconds=FLAGS.hubert_seconds, steps=FLAGS.clip_steps, warmup=FLAGS.clip_warmup,
        clip_preset=FLAGS.clip_preset, clip_clips=FLAGS.features_clips,
        clip_frames=FLAGS.features_frames, clip_batch=FLAGS.features_batch)
  if name == "mer":
    from mmjax.projects.mer2023 import benchmark
    return benchmark, benchmark.run_suite(
        batch_size=FLAGS.mer_batch, steps=FLAGS.mer_steps, warmup=FLAGS.mer_warmup,
        feature_dim=FLAGS.mer_feature_dim, hidden=FLAGS.mer_hidden, embed=FLAGS.mer_embed,
        torch_threads=FLAGS.mer_torch_threads)
  from mmjax.projects.emovclip import benchmark
  return benchmark, benchmark.run_suite(FLAGS.prompt_config, batch_size=FLAGS.prompt_batch,
                                        steps=FLAGS.clip_steps, warmup=FLAGS.clip_warmup,
                                        frames=FLAGS.prompt_frames)


def main(argv):
  del argv
  from mmjax import benchmarking  # pylint: disable=import-outside-toplevel
  timestamp = benchmarking.utc_timestamp()  # one per run: its records share it
  for name in FLAGS.suite:
    module, results = run_suite(name)
    print(module.report(results))
    print(json.dumps({"suite": name, **results}, sort_keys=True), flush=True)
    if FLAGS.json:
      records = module.records(results, name, timestamp=timestamp)
      benchmarking.append_json_lines(FLAGS.json, records)
      benchmarking.log(f"{len(records)} records appended to {FLAGS.json}")


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
