"""Writes an image folder as a prepared TFDS dataset (array_record), without TensorFlow:

  python -m blockqnn_jax.prepare_dataset FOLDER DIRECTORY

FOLDER is an image folder as ``config.dataset`` takes it (``own_data``: train/CLASS/*, an
optional held-out validation/, val/ or test/). DIRECTORY/NAME/1.0.0 (NAME: the folder's
name) receives its 'train' split and its held-out split as 'test', one array_record file
each, and that version directory is what ``config.dataset`` then names. Every mode reads
a folder directly and streams it at least as fast (docs/running.md, "Your own data"): the
conversion is for moving a dataset as two files rather than many small ones.

JPEGs are stored byte for byte; any other image is stored as the RGB PNG of its pixels,
so every record decodes to three channels, as a folder's images do. Where every image has
one size, the dataset declares it (the in-memory modes read only fixed-size TFDS
datasets).
"""

from __future__ import annotations

import io
import os
import sys

from absl import app
from PIL import Image

from blockqnn_jax import data as data_lib
from blockqnn_jax import images
from blockqnn_jax import own_data

VERSION = '1.0.0'


def rgb_encoded(path: str) -> bytes:
  """The image at ``path`` as bytes that decode to RGB: a JPEG's own bytes (a grey or CMYK
  one decodes to RGB too, in ``images.decode`` and in TFDS), any other image as the PNG of
  its RGB pixels (``own_data.read_image``)."""
  image = own_data.read_image(path)
  if isinstance(image, bytes):
    return image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'PNG')
  return buffer.getvalue()


def write_tfds(folder: str, directory: str) -> str:
  """The image folder's training and held-out (test) images as a TFDS array_record
  dataset under ``directory``; returns its version directory."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tfds = data_lib.import_tfds()
  from tensorflow_datasets.core import example_serializer  # pylint: disable=g-import-not-at-top
  classes, *splits = own_data.folder_files(folder, own_data.TEST_FOLDERS)
  sizes = {images.image_shape(own_data.read_image(path))
           for paths in (splits[0], splits[2]) for path in paths}
  shape = (*sizes.pop(), 3) if len(sizes) == 1 else (None, None, 3)
  name = os.path.basename(os.path.normpath(folder))
  version_dir = os.path.join(directory, name, VERSION)
  os.makedirs(version_dir, exist_ok=True)
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=shape),
      'label': tfds.features.ClassLabel(names=list(classes))})
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  split_infos = []
  for split, paths, labels in (('train', *splits[:2]), ('test', *splits[2:])):
    writer = array_record_module.ArrayRecordWriter(
        os.path.join(version_dir, f'{name}-{split}.array_record-00000-of-00001'),
        'group_size:1')  # TFDS's own setting: one record per chunk, for random access
    for path, label in zip(paths, labels):
      writer.write(serializer.serialize_example(
          features.encode_example({'image': rgb_encoded(path), 'label': int(label)})))
    writer.close()
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(paths)],
                                           num_bytes=0))
  tfds.folder_dataset.write_metadata(
      data_dir=version_dir, features=features, split_infos=split_infos,
      filename_template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}', check_data=False)
  return version_dir


def main(argv):
  if len(argv) != 3:
    raise app.UsageError('usage: python -m blockqnn_jax.prepare_dataset FOLDER DIRECTORY')
  folder, directory = argv[1:]
  try:
    if own_data.dataset_kind(folder) != own_data.FOLDER:
      raise own_data.DatasetError(f'{folder}: not an image folder (train/CLASS/ expected)')
    print(f'wrote {write_tfds(folder, directory)}')
  except own_data.DatasetError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main)
