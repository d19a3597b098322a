"""mmjax: multimodal classification in JAX/Flax.

One core shared by every system, and one folder per paper (docs/architecture.md):
  mmjax.projects  one package per paper (task, model assembly, benchmarks, README); imports the
                  core, which never imports it
  mmjax.train     trainer loop, jit steps, Orbax checkpoints, optimizer, init_from, eval splits
  mmjax.tasks     the Task protocol and the registry (finds the projects' tasks)
  mmjax.data      grain pipelines, TFRecord / YouTube-8M / image-text / video readers, synthetic
                  writers
  mmjax.models    shared backbones (the Flax CLIP)
  mmjax.nn        layers (encoder block, NetVLAD, pooling, l2_normalize)
  mmjax.losses    loss functions
  mmjax.metrics   evaluation metrics (GAP/MAP/PERR/Hit@1, classification, retrieval)
  mmjax.parallel  mesh and sharding rules
"""

__version__ = "0.2.0"
