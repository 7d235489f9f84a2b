"""Datasets, unlearning splits and input pipelines."""

from mixunlearn_jax.data.datasets import Dataset, load, names, raw_test_order
from mixunlearn_jax.data.pipeline import (Preprocess, Side, Stream, eval_pipeline, paired_stream,
                                          side_rows, steps_per_epoch, steps_per_pass,
                                          stream_pipeline, stream_rows, train_pipeline)
from mixunlearn_jax.data.splits import SETUPS, Split, make_split

__all__ = ["Dataset", "Preprocess", "SETUPS", "Side", "Split", "Stream", "eval_pipeline", "load",
           "make_split", "names", "paired_stream", "raw_test_order", "side_rows", "steps_per_epoch",
           "steps_per_pass", "stream_pipeline", "stream_rows", "train_pipeline"]
