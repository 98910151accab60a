"""Encoded or decoded images to pixels: the decoding and resizing that the streaming
pipeline (``streaming_input``) and the in-memory reading of image folders (``own_data``)
share.

JPEGs decode with simplejpeg (libjpeg-turbo) at the smallest DCT scale that still leaves
the wanted box at least the output size, other formats (PNG, ...) with Pillow; resizing is
OpenCV's (docs/performance.md: the measurements behind these choices).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import simplejpeg
from PIL import Image

JPEG_MAGIC = b'\xff\xd8'

cv2.setNumThreads(1)  # parallelism comes from the worker processes


def image_shape(image) -> tuple[int, int]:
  """(height, width) of an encoded or decoded image, without decoding it."""
  if isinstance(image, np.ndarray):
    return image.shape[:2]
  if image[:2] == JPEG_MAGIC:
    return simplejpeg.decode_jpeg_header(image)[:2]
  width, height = Image.open(io.BytesIO(image)).size
  return height, width


def decode(image, min_height: int = 0, min_width: int = 0) -> np.ndarray:
  """H x W x C uint8 pixels; JPEGs at the smallest DCT scale (k/8) keeping at least
  ``min_height`` x ``min_width``. Arrays (already decoded) pass through."""
  if isinstance(image, np.ndarray):
    return image
  if image[:2] == JPEG_MAGIC:
    try:
      return simplejpeg.decode_jpeg(image, colorspace='RGB', min_height=min_height,
                                    min_width=min_width)
    except ValueError:  # CMYK JPEGs (a few in ImageNet): Pillow converts them
      pass
  pil = Image.open(io.BytesIO(image))
  pixels = np.asarray(pil if pil.mode in ('L', 'RGB') else pil.convert('RGB'))
  return pixels[..., None] if pixels.ndim == 2 else pixels


def crop_resized(image, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """``box`` (top, left, height, width in the full image's pixels) of an encoded or
  decoded image, resized to ``size`` x ``size``."""
  height, width = image_shape(image)
  top, left, box_height, box_width = box
  # The largest power-of-two reduction (libjpeg-turbo's fast scaled IDCTs; k/8 scales
  # in between measured slower than full decoding) keeping the box at least ``size``.
  reduction = max([1] + [f for f in (2, 4, 8) if min(box_height, box_width) >= f * size])
  pixels = decode(image, min_height=-(-height // reduction),
                  min_width=-(-width // reduction))
  scale_y, scale_x = pixels.shape[0] / height, pixels.shape[1] / width
  crop = pixels[round(top * scale_y):round((top + box_height) * scale_y),
                round(left * scale_x):round((left + box_width) * scale_x)]
  if crop.shape[:2] != (size, size):
    # Bilinear (8x faster than area averaging) aliases little when shrinking less than
    # 2x, as after a JPEG's reduction; area averaging shrinks more.
    far = max(crop.shape[:2]) >= 2 * size
    crop = cv2.resize(crop, (size, size),
                      interpolation=cv2.INTER_AREA if far else cv2.INTER_LINEAR)
  return crop.reshape(size, size, pixels.shape[-1])  # OpenCV drops a channel axis of 1


def centre_square(height: int, width: int, fraction: float = 1.0) -> tuple[int, int, int, int]:
  """The centred square box (top, left, side, side) whose side is ``fraction`` of the
  shorter side (at least one pixel)."""
  side = max(1, round(min(height, width) * fraction))
  return (height - side) // 2, (width - side) // 2, side, side
