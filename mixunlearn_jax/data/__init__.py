"""Datasets, unlearning splits and input pipelines."""

from mixunlearn_jax.data.datasets import Dataset, load, names
from mixunlearn_jax.data.pipeline import (Preprocess, eval_pipeline, paired_pipeline,
                                          steps_per_epoch, stream_rows, train_pipeline)
from mixunlearn_jax.data.splits import SETUPS, Split, make_split

__all__ = ["Dataset", "Preprocess", "SETUPS", "Split", "eval_pipeline", "load", "make_split",
           "names", "paired_pipeline", "steps_per_epoch", "stream_rows", "train_pipeline"]
