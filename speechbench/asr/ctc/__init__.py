"""The project's own character-level CTC recognizers: features, models, decoding, training, backend.

Importing this package registers ``ctc-small``, ``ctc-medium``, ``ctc-large`` and ``ctc-streaming`` with
the recognizer registry (unavailable, with the reason, until their checkpoints exist in ``models/``).
"""

from speechbench.asr.ctc.backend import CTCRecognizer, register_ctc_backends, register_ctc_checkpoint
from speechbench.asr.ctc.features import FeatureConfig, LogMel, StreamingLogMel
from speechbench.asr.ctc.model import SIZES, CTCModel, ModelConfig, StreamState, build_ctc_model
from speechbench.asr.ctc.tokenizer import Tokenizer, normalize_target

register_ctc_backends()

__all__ = [
    "SIZES",
    "CTCModel",
    "CTCRecognizer",
    "FeatureConfig",
    "LogMel",
    "ModelConfig",
    "StreamState",
    "StreamingLogMel",
    "Tokenizer",
    "build_ctc_model",
    "normalize_target",
    "register_ctc_backends",
    "register_ctc_checkpoint",
]
