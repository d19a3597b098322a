"""Export a CLIP task's checkpoint (configs/clip_pretrain.py, configs/emovclip.py) as a Hugging
Face CLIP directory (config.json + model.safetensors):

  python launch/export_clip.py --config=configs/clip_pretrain.py --workdir=/tmp/clip \
      --output=/tmp/clip_hf [--step=latest|best|N]
Then `mmjax.models.clip.from_pretrained('/tmp/clip_hf')` or transformers'
`CLIPModel.from_pretrained('/tmp/clip_hf')` loads it. A run trained on several hosts is exported
by the same command on each (--coordinator_address, --num_processes, --process_id, or detected on
a cluster); process 0 writes the directory.
"""

from absl import app, flags

from mmjax import cli

cli.define_flags("The training run's workdir.")
flags.DEFINE_string("output", None, "Directory to write config.json + model.safetensors to.")
flags.DEFINE_string("step", "latest", "Checkpoint to export: 'latest', 'best' or a step number.")
flags.mark_flag_as_required("output")


def main(argv):
  del argv
  cli.initialize_distributed()
  from mmjax.train.export import export_checkpoint  # pylint: disable=import-outside-toplevel
  step = export_checkpoint(cli.FLAGS.config, cli.workdir(), flags.FLAGS.output, flags.FLAGS.step)
  print(f"exported step {step} of {cli.workdir()} to {flags.FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
