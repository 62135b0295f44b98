r"""Downloads and prepares a TFDS image dataset in the format the loaders read (array_record).

  pip install -e '.[tf]'   # TFDS needs TensorFlow to build datasets
  python -m experiments.prepare_data --dataset=cifar10 --data_dir=$HOME/tfds

Run from the repository root; needs internet. The loaders (`genviz_jax.data.get_dataset(NAME, data_dir=DIR)`) then read the
prepared files with `tfds.data_source`, without TensorFlow. Allowed datasets: mnist,
fashion_mnist, cifar10, svhn_cropped (svhn's `extra` split, 531k images, is prepared too).
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging

from experiments import common
from genviz_jax import data

_DATASET = flags.DEFINE_string("dataset", None,
                               "TFDS name: " + ", ".join(sorted(data.TFDS_DATASETS)))
_DATA_DIR = flags.DEFINE_string("data_dir", None, "directory to prepare the dataset in")


def prepare(name: str, data_dir: str) -> None:
  """Checks the arguments, then runs the TFDS builder's download_and_prepare (array_record)."""
  if name not in data.TFDS_DATASETS:
    raise common.UsageError(f"--dataset={name!r} is not a TFDS dataset we read; allowed: "
                            f"{', '.join(sorted(data.TFDS_DATASETS))}")
  if not data_dir:
    raise common.UsageError("--data_dir is required (a directory; it is created if missing)")
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise common.UsageError(f"--data_dir={data_dir!r} exists and is not a directory")
  import tensorflow_datasets as tfds  # local: slow import
  os.makedirs(data_dir, exist_ok=True)
  builder = tfds.builder(name, data_dir=data_dir)
  # data_source reads only random-access formats; tfds' default (tfrecord) would not load.
  builder.download_and_prepare(file_format="array_record")
  logging.info("prepared %s in %s: %s", name, data_dir,
               {k: v.num_examples for k, v in builder.info.splits.items()})


if __name__ == "__main__":
  common.run_binary(lambda: prepare(_DATASET.value, _DATA_DIR.value), config=None)
