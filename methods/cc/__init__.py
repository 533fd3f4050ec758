"""CC-Tuning (Ye et al., ACL 2025): the cross-lingual connection mechanism, model-agnostic.

- `hooks`: find decoder layers and feed-forward blocks; capture at / inject into the RST.
- `model`: `CCModel`, the causal LM + Decision Maker, for training.
- `trainer`: `CCTrainer`, the transformers Trainer for `CCModel` (imported on use: it is slow to import).
- `transform`: the Transform Matrix W_T and the `cc.safetensors` checkpoint file.
- `lm`: `CCLM`, the lm-eval model for CC inference (two passes sharing the key/value cache).
- `method`: `CCTuning`, the method registered as `cc`.
"""

from harness.methods.cc.hooks import CCHooks, decoder_layers, feed_forward
from harness.methods.cc.method import (
    ARTIFACTS,
    CCDataset,
    CCTuning,
    english_gradient,
    training_layer_histogram,
)
from harness.methods.cc.model import CCModel, CCOptions
from harness.methods.cc.pairs import Pair
from harness.methods.cc.transform import (
    CCWeights,
    fit_and_save,
    fit_transform,
    fit_transform_matrix,
    load_cc,
    refit_checkpoint,
    save_cc,
)

__all__ = [
    "ARTIFACTS",
    "CCDataset",
    "CCTuning",
    "english_gradient",
    "training_layer_histogram",
    "CCHooks",
    "CCModel",
    "CCOptions",
    "CCWeights",
    "Pair",
    "decoder_layers",
    "feed_forward",
    "fit_transform",
    "fit_and_save",
    "refit_checkpoint",
    "fit_transform_matrix",
    "load_cc",
    "save_cc",
]
