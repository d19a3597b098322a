"""mmjax: multimodal classification in JAX/Flax.

Subpackages (each imports only from those listed after it):
  mmjax.train    trainer loop, jit step, checkpoints, logging
  mmjax.data     grain pipelines, TFRecord readers, synthetic writers
  mmjax.models   task models (YouTube-8M video classifiers, ...)
  mmjax.nn       layers (NetVLAD, transformer encoder, pooling)
  mmjax.losses   loss functions
  mmjax.metrics  evaluation metrics (YouTube-8M GAP/MAP/PERR/Hit@1)
  mmjax.parallel mesh and sharding rules
"""

__version__ = "0.1.0"
