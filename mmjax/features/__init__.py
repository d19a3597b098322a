"""Feature extraction into the MERTools layout (mmjax.data.mertools_layout): HuBERT hidden
states of raw audio and CLIP / EmoVCLIP embeddings of video frames, batched over the local
devices and resumable (mmjax/features/README.md; launch/extract_features.py).

  extractor = HubertFeatures("/models/chinese-hubert-large", "/data/mer2024/audio",
                             name="chinese-hubert-large", layers=(18, 19, 20))
  extract(extractor, sample_names("/data/mer2024/audio", "wav"), "/data/mer2024/features",
          batch_size=8)
"""

from mmjax.features.clip import ClipFrameFeatures, from_checkpoint, from_emovclip_workdir
from mmjax.features.hubert import HubertFeatures
from mmjax.features.runner import Extractor, data_mesh, extract
from mmjax.features.samples import label_names, sample_names

__all__ = ["ClipFrameFeatures", "Extractor", "HubertFeatures", "data_mesh", "extract",
           "from_checkpoint", "from_emovclip_workdir", "label_names", "sample_names"]
