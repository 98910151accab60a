"""Datasets a user brings on disk, named by their path in ``config.dataset``:

- a folder of images in class subfolders, ``ROOT/train/CLASS/*`` with an optional held-out
  split ``ROOT/validation/``, ``ROOT/val/`` or ``ROOT/test/`` beside it (the ImageFolder
  convention of torchvision, Keras and TFDS); any of ``IMAGE_EXTENSIONS`` in any case;
- a ``.npz`` holding ``x_train`` and ``y_train``, optionally ``x_test`` and ``y_test``
  (the Keras datasets convention);
- a prepared TFDS directory (``.../cifar10/3.0.2``, holding ``dataset_info.json``), which
  ``data`` and ``streaming_input`` read as TFDS does.

Every mistake in them is one line naming the file or array and what is wrong
(``DatasetError``), raised at start-up: the in-memory modes decode every image then, the
streaming mode reads every image's header. Where no held-out split is given, a fixed
``HELD_OUT_FRACTION`` of the training images is held out in its place.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

# A search on a TFDS dataset needs neither OpenCV nor simplejpeg (``images``): they are
# imported where a folder or a .npz is read.

FOLDER, NPZ, TFDS_DIRECTORY = 'folder', 'npz', 'tfds_directory'
IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.ppm', '.tif', '.tiff',
                    '.webp')
# The held-out folder of the in-memory modes (a test split: mode=train's score) and of the
# streaming mode (its per-epoch evaluation, ImageNet's validation split), first found first.
TEST_FOLDERS = ('test', 'validation', 'val')
EVAL_FOLDERS = ('validation', 'val', 'test')
# Our choice, where no held-out split is given: a tenth, about CIFAR's 10,000 of 60,000.
HELD_OUT_FRACTION = 0.1
_ORDER_SEED = 0  # the fixed order of a folder's images and of what is held out


class DatasetError(ValueError):
  """A dataset on disk that cannot be read: one line naming the file or array."""


def one_line(error: Exception) -> str:
  """An error's message on one line (Pillow's and TFDS's may hold several)."""
  return ' '.join(str(error).split())


def looks_like_path(dataset: str) -> bool:
  """Whether ``config.dataset`` names a path rather than a TFDS dataset (TFDS names such
  as 'imagenet_resized/32x32' hold a slash too, but never start with one)."""
  return (os.path.exists(os.path.expanduser(dataset))
          or dataset.startswith(('/', '.', '~')) or dataset.lower().endswith('.npz'))


def dataset_kind(dataset: str) -> str | None:
  """FOLDER, NPZ or TFDS_DIRECTORY for a path, None for a TFDS name."""
  if not looks_like_path(dataset):
    return None
  path = os.path.expanduser(dataset)
  if not os.path.exists(path):
    raise DatasetError(f'{dataset}: no such file or directory')
  if os.path.isfile(path):
    if path.lower().endswith('.npz'):
      return NPZ
    raise DatasetError(f'{dataset}: a file that is not a .npz; a dataset is a .npz, a '
                       'folder with train/CLASS/ image folders or a prepared TFDS directory')
  if os.path.isfile(os.path.join(path, 'dataset_info.json')):
    return TFDS_DIRECTORY
  if os.path.isdir(os.path.join(path, 'train')):
    return FOLDER
  raise DatasetError(
      f'{dataset}: holds no dataset: expected train/CLASS/ image folders (with an optional '
      'validation/, val/ or test/ beside train/), a prepared TFDS version directory (with '
      'dataset_info.json, e.g. .../cifar10/3.0.2) or a .npz file')


def held_out(count: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held out) indices of ``count`` training examples, where a dataset gives no
  held-out split: a fixed ``HELD_OUT_FRACTION`` (at least one) in a fixed order."""
  order = np.random.default_rng(_ORDER_SEED).permutation(count)
  held = max(1, round(count * HELD_OUT_FRACTION))
  return np.sort(order[held:]), np.sort(order[:held])


# --- Image folders ---------------------------------------------------------------------


def _image_files(directory: str) -> list[str]:
  """The image files under ``directory`` (recursively), sorted."""
  found = []
  for parent, subdirectories, names in os.walk(directory):
    subdirectories.sort()
    found.extend(os.path.join(parent, name) for name in sorted(names)
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  return found


def _class_folder_files(split_dir: str, classes: list[str]) -> tuple[list[str], list[int]]:
  """Every image of a split's class folders, with the index of its class in ``classes``;
  an empty class folder, or one that ``classes`` lacks, is refused."""
  paths, labels = [], []
  for name in sorted(os.listdir(split_dir)):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue
    if name not in classes:
      raise DatasetError(f'{class_dir}: a class that train/ does not have')
    files = _image_files(class_dir)
    if not files:
      raise DatasetError(f'{class_dir}: an empty class folder (no '
                         f'{"/".join(IMAGE_EXTENSIONS)} files, in any case)')
    paths += files
    labels += [classes.index(name)] * len(files)
  return paths, labels


@functools.cache
def folder_files(root: str, preferred: tuple[str, ...]) -> tuple:
  """(classes, train paths, train labels, held-out paths, held-out labels) of an image
  folder, in a fixed shuffled order (as TFDS stores records: a capped run reads a sample
  of every class). The held-out split is the first of the ``preferred`` folders beside
  train/, else ``held_out``'s part of train. Each image's header is read (Pillow), so a
  file that is not an image is named here."""
  train_dir = os.path.join(root, 'train')
  classes = sorted(name for name in os.listdir(train_dir)
                   if os.path.isdir(os.path.join(train_dir, name)))
  if not classes:
    raise DatasetError(f'{train_dir}: no class folders (train/CLASS/images expected)')
  paths, labels = _class_folder_files(train_dir, classes)
  split = next((name for name in preferred if os.path.isdir(os.path.join(root, name))), None)
  if split:
    held_paths, held_labels = _class_folder_files(os.path.join(root, split), classes)
    if not held_paths:
      raise DatasetError(f'{os.path.join(root, split)}: no class folders (CLASS/images '
                         'as in train/ expected)')
  else:
    kept, held = held_out(len(paths))
    held_paths, held_labels = [paths[i] for i in held], [labels[i] for i in held]
    paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
  for path in paths + held_paths:
    check_image_header(path)

  def shuffled(paths, labels):
    order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
    return tuple(paths[i] for i in order), np.asarray(labels, np.int32)[order]

  return (tuple(classes), *shuffled(paths, labels), *shuffled(held_paths, held_labels))


def check_image_header(path: str) -> None:
  """Refuses a file whose header Pillow cannot read (not an image, or cut short in it)."""
  try:
    with Image.open(path) as image:
      image.size  # pylint: disable=pointless-statement
  except Exception as error:  # pylint: disable=broad-except  (Pillow raises many kinds)
    raise DatasetError(f'{path}: not a readable image ({one_line(error)})') from None


def read_image(path: str):
  """A folder image as the streaming pipeline takes it: a JPEG's bytes (decoded later, at
  a reduced DCT scale), any other format decoded here to RGB pixels. Folder images are
  always RGB, whatever their mode (grey, palette, RGBA, CMYK)."""
  from blockqnn_jax import images  # pylint: disable=g-import-not-at-top
  try:
    with open(path, 'rb') as file:
      encoded = file.read()
    if encoded[:2] == images.JPEG_MAGIC:
      images.image_shape(encoded)  # a JPEG whose header cannot be read fails here
      return encoded
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except Exception as error:  # pylint: disable=broad-except  (Pillow, simplejpeg, OS)
    raise DatasetError(f'{path}: not a readable image ({one_line(error)})') from None


class FolderSource:
  """A random-access source of a folder split's records {'image', 'label'} (Grain reads
  it in its worker processes; it pickles as its list of paths)."""

  def __init__(self, paths, labels):
    self.paths, self.labels = paths, labels

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    return {'image': read_image(self.paths[index]), 'label': int(self.labels[index])}


def resized_pixels(path: str, size: int) -> np.ndarray:
  """A folder image fully decoded, its centre square resized to ``size`` x ``size`` RGB."""
  from blockqnn_jax import images  # pylint: disable=g-import-not-at-top
  image = read_image(path)
  try:
    pixels = images.crop_resized(image, images.centre_square(*images.image_shape(image)),
                                 size)
  except Exception as error:  # pylint: disable=broad-except  (a JPEG cut short, ...)
    raise DatasetError(f'{path}: not a readable image ({one_line(error)})') from None
  return pixels


def folder_arrays(root: str, size: int) -> tuple:
  """(train images, train labels, test images, test labels, class count) of an image
  folder, every image decoded and resized to ``size`` (uint8, N x size x size x 3)."""
  classes, paths, labels, test_paths, test_labels = folder_files(root, TEST_FOLDERS)

  def decoded(paths):
    pixels = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
      pixels[i] = resized_pixels(path, size)
    return pixels

  return decoded(paths), labels, decoded(test_paths), test_labels, len(classes)


# --- .npz arrays -----------------------------------------------------------------------


def _npz_images(path: str, name: str, array: np.ndarray) -> np.ndarray:
  """``array`` as N x H x W x C uint8 (an N x H x W array gains a channel axis)."""
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3) or 0 in array.shape:
    raise DatasetError(f'{path}: {name} has shape {array.shape}; N x H x W or '
                       'N x H x W x C images (C = 1 or 3) are needed')
  if array.dtype != np.uint8:
    raise DatasetError(f'{path}: {name} has dtype {array.dtype}; uint8 pixels (0-255) are '
                       'needed')
  return array


def _npz_labels(path: str, name: str, array: np.ndarray, count: int,
                images_name: str) -> np.ndarray:
  """``array`` as ``count`` int32 labels (an N x 1 array, as Keras's CIFAR, is flattened)."""
  if array.ndim == 2 and array.shape[1] == 1:
    array = array[:, 0]
  if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
    raise DatasetError(f'{path}: {name} has shape {array.shape} and dtype {array.dtype}; '
                       'integer class labels (N or N x 1) are needed')
  if len(array) != count:
    raise DatasetError(f'{path}: {name} has {len(array)} labels for the {count} images '
                       f'of {images_name}')
  if array.min() < 0:
    raise DatasetError(f'{path}: {name} holds label {array.min()}; labels are 0 or more')
  return array.astype(np.int32)


@functools.cache
def npz_arrays(path: str) -> tuple:
  """(train images, train labels, test images, test labels, class count) of a .npz, at
  its own image size; the class count is one more than y_train's largest label."""
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except Exception as error:  # pylint: disable=broad-except  (zip, pickle, OS errors)
    raise DatasetError(f'{path}: not a readable .npz ({one_line(error)})') from None
  for name in ('x_train', 'y_train'):
    if name not in arrays:
      raise DatasetError(f'{path}: no {name} array (it holds {sorted(arrays)}); x_train '
                         'and y_train are needed, x_test and y_test optional')
  if ('x_test' in arrays) != ('y_test' in arrays):
    raise DatasetError(f'{path}: x_test and y_test come together; it holds '
                       f'{sorted(arrays)}')
  x_train = _npz_images(path, 'x_train', arrays['x_train'])
  y_train = _npz_labels(path, 'y_train', arrays['y_train'], len(x_train), 'x_train')
  num_classes = int(y_train.max()) + 1
  if 'x_test' in arrays:
    x_test = _npz_images(path, 'x_test', arrays['x_test'])
    if x_test.shape[1:] != x_train.shape[1:]:
      raise DatasetError(f'{path}: x_test has images of shape {x_test.shape[1:]}, '
                         f'x_train of {x_train.shape[1:]}; they must match')
    y_test = _npz_labels(path, 'y_test', arrays['y_test'], len(x_test), 'x_test')
    if y_test.max() >= num_classes:
      raise DatasetError(f'{path}: y_test holds label {y_test.max()}, outside the '
                         f'0-{num_classes - 1} of y_train')
  else:
    kept, held = held_out(len(y_train))
    x_train, y_train, x_test, y_test = x_train[kept], y_train[kept], x_train[held], y_train[held]
  return x_train, y_train, x_test, y_test, num_classes


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
  """N x H x W x C uint8 images resized to ``size`` x ``size`` (unchanged at that size):
  area averaging to shrink, bilinear to enlarge."""
  import cv2  # pylint: disable=g-import-not-at-top
  if pixels.shape[1:3] == (size, size):
    return pixels
  shrink = min(pixels.shape[1:3]) > size
  out = np.empty((len(pixels), size, size, pixels.shape[-1]), np.uint8)
  for i, image in enumerate(pixels):
    out[i] = cv2.resize(image, (size, size), interpolation=(
        cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)).reshape(size, size, -1)
  return out


class ArraySource:
  """A random-access source of decoded records {'image', 'label'} over arrays."""

  def __init__(self, pixels: np.ndarray, labels: np.ndarray):
    self.pixels, self.labels = pixels, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    return {'image': self.pixels[index], 'label': int(self.labels[index])}


def streaming_sources(dataset: str) -> tuple[dict, int]:
  """The 'train' and 'eval' sources of a folder or a .npz for the streaming pipeline,
  and the class count."""
  path = os.path.expanduser(dataset)
  if dataset_kind(dataset) == FOLDER:
    classes, paths, labels, eval_paths, eval_labels = folder_files(path, EVAL_FOLDERS)
    return ({'train': FolderSource(paths, labels),
             'eval': FolderSource(eval_paths, eval_labels)}, len(classes))
  x_train, y_train, x_test, y_test, num_classes = npz_arrays(path)
  return ({'train': ArraySource(x_train, y_train), 'eval': ArraySource(x_test, y_test)},
          num_classes)
