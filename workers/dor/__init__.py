"""Dynamic Outlier Regularization: the outlier vocabularies, the outlier pool and the DOR loss."""

from workers.dor.pool import (
    STRATEGIES,
    ZS_TEMPLATE,
    OutlierPool,
    build_pool,
    encode_words,
    vocabulary_features,
)
from workers.dor.regularizer import DynamicOutlierRegularizer, OutlierSampler, dor_loss
from workers.dor.vocabulary import (
    clip_bpe_vocabulary,
    noun_vocabulary,
    read_word_file,
    vocabulary_words,
    wordnet_reader,
)

__all__ = [
    "STRATEGIES",
    "ZS_TEMPLATE",
    "DynamicOutlierRegularizer",
    "OutlierPool",
    "OutlierSampler",
    "build_pool",
    "clip_bpe_vocabulary",
    "dor_loss",
    "encode_words",
    "noun_vocabulary",
    "read_word_file",
    "vocabulary_features",
    "vocabulary_words",
    "wordnet_reader",
]
