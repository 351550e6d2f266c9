"""Produce the fine-tuned models the project explains, and measure their emoji behaviour.

Data (``data``, ``injection``, ``studies``) -> QLoRA adapter (``qlora``) -> merged model (``merge``);
``behavior`` measures emoji use of any model, ``emoji_tokens`` gives the differentiable emoji mass.
"""

from training.data import TRAITS, OpinionRow, TopicSplit, load_opinion_qa, rows_hash, split_by_topic
from training.studies import STUDIES, StudyData, study_data

__all__ = [
    "STUDIES",
    "TRAITS",
    "OpinionRow",
    "StudyData",
    "TopicSplit",
    "load_opinion_qa",
    "rows_hash",
    "split_by_topic",
    "study_data",
]
