"""Partition rules for CLIP parameters (and their optimizer moments), for config.sharding_rules.

Megatron-style tensor parallelism over 'model' inside every block, FSDP over 'data' on the other
kernel dimension: q/k/v_proj and fc1 are column-parallel (kernel [in, out] -> ('data', 'model'),
bias [out] -> 'model'), out_proj and fc2 row-parallel (kernel -> ('model', 'data')); the token
embedding table [vocab, width] is split over 'data' along the vocabulary, patch kernels over
their output channels. Axes that do not divide a dimension are dropped (mmjax.parallel), so the
same rules serve 1 device or a pod; everything else (LayerNorms, prompts, logit_scale) is
replicated.
"""

PARTITION_RULES = (
    (r".*self_attn/(q_proj|k_proj|v_proj)/kernel", ("data", "model")),
    (r".*self_attn/(q_proj|k_proj|v_proj)/bias", ("model",)),
    (r".*self_attn/out_proj/kernel", ("model", "data")),
    (r".*mlp/fc1/kernel", ("data", "model")),
    (r".*mlp/fc1/bias", ("model",)),
    (r".*mlp/fc2/kernel", ("model", "data")),
    (r".*token_embedding/embedding", ("data", None)),
    (r".*patch_embedding/kernel", (None, None, None, "model")),
    (r".*(text_projection|visual_projection)/kernel", ("data", "model")),
)
