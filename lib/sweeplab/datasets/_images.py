"""Fast decoding of many small image files (JPEG trees) into one uint8 array.

Files are read as bytes and decoded by ``torchvision.io.decode_jpeg`` in batches (libjpeg-turbo,
about 25-40 us per 32x32 image on one core); a batch that fails is decoded file by file with
``torchvision.io.decode_image`` (which also reads PNG), so a corrupt file is reported by name.
torchvision 0.29 deprecates its image decoders in favour of TorchCodec; where they are gone,
Pillow decodes instead (:data:`DECODER`).
An optional resize of the shorter side plus a centre crop reproduces
``torchvision.transforms.Resize(size)`` + ``CenterCrop(size)`` (bilinear, antialiased; within one
grey level of the PIL path).
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sweeplab.datasets.base import DatasetError

if TYPE_CHECKING:
    import torch

#: File name endings read by the image-folder readers (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

_CHUNK = 2048


def _torchvision_decoders() -> bool:
    try:
        from torchvision.io import decode_image, decode_jpeg  # noqa: F401
    except ImportError:  # deprecated since torchvision 0.29, to be removed (moved to TorchCodec)
        return False
    return True


#: ``"torchvision"`` (libjpeg-turbo via ``torchvision.io``, batched) or ``"pil"`` (Pillow, about
#: 2.5x slower); ``None``: torchvision where its decoders exist, decided at the first decode
#: (so importing the dataset registry does not import torch).
DECODER: str | None = None


def decoder() -> str:
    """The decoder in use: :data:`DECODER`, or torchvision where its decoders exist, else Pillow."""
    global DECODER
    if DECODER is None:
        DECODER = "torchvision" if _torchvision_decoders() else "pil"
    return DECODER


def _read_bytes(path: Path | str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DatasetError(f"cannot read image file {str(path)!r}: {exc.strerror or exc}; "
                           "check the file exists and is readable") from None
    if not data:
        raise DatasetError(f"image file {str(path)!r} is empty; replace it with the original "
                           "(re-run shared/data/materialize.sh) or delete it")
    return data


def _undecodable(path: Path | str, reason: str) -> DatasetError:
    return DatasetError(
        f"image file {str(path)!r} does not decode ({reason}): it is corrupt or truncated; "
        "replace it with the original (re-run shared/data/materialize.sh) or delete it")


def _decode_pil(path: Path | str, data: bytes) -> torch.Tensor:
    import torch

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise _undecodable(path, str(exc)) from None
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _decode_chunk(paths: Sequence[Path | str]) -> list[torch.Tensor]:
    import torch

    datas = [_read_bytes(p) for p in paths]
    if decoder() == "pil":
        return [_decode_pil(p, d) for p, d in zip(paths, datas)]
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: "use TorchCodec"
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB))
        except RuntimeError:
            pass
        # A non-JPEG or broken file in the batch: decode one by one to name the culprit.
        out = []
        for p, t in zip(paths, tensors):
            try:
                out.append(decode_image(t, mode=ImageReadMode.RGB))
            except RuntimeError as exc:
                # "decode_jpeg, /path/decode_jpeg.cpp:171, Image is incomplete or truncated"
                reason = re.sub(r"^\w+, \S+:\d+, ", "", str(exc).strip().splitlines()[-1])
                raise _undecodable(p, reason.split(". ")[0]) from None
        return out


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and crop the centre ``size x size`` square.

    Args:
        images: ``uint8`` tensor ``[B, C, H, W]``.
        size: output side length in pixels.

    Returns:
        ``uint8`` tensor ``[B, C, size, size]``; the same as torchvision's
        ``Resize(size)`` + ``CenterCrop(size)`` (bilinear, antialias).
    """
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(F.resize(images, [size], antialias=True), [size, size])


def decode_image_files(paths: Sequence[Path | str], *, size: int | None = None,
                       what: str = "image") -> np.ndarray:
    """Decode image files into one RGB array.

    Args:
        paths: the files, in output order (JPEG, or PNG).
        size: if given, resize the shorter side to ``size`` and centre-crop to ``size x size``;
            if ``None`` every image must have the size of the first one.
        what: what the images are, for error messages (e.g. ``"CIFAR-10 image"``).

    Returns:
        ``uint8`` array ``[N, 3, H, W]`` (``H = W = size`` when ``size`` is given).

    Raises:
        DatasetError: a file that cannot be read or decoded, or (``size=None``) an image whose
            size differs from the first one; the message names the file.
    """
    import torch

    n = len(paths)
    out: np.ndarray | None = None
    for start in range(0, n, _CHUNK):
        chunk = list(paths[start:start + _CHUNK])
        images = _decode_chunk(chunk)
        if out is None:
            first = images[0]
            h, w = (size, size) if size is not None else tuple(first.shape[1:])
            out = np.empty((n, 3, h, w), dtype=np.uint8)
            ref_path, ref_shape = chunk[0], tuple(first.shape[1:])
        if size is None:
            for p, img in zip(chunk, images):
                if tuple(img.shape[1:]) != ref_shape:
                    raise DatasetError(
                        f"{what} {str(p)!r} is {img.shape[2]}x{img.shape[1]} pixels but "
                        f"{str(ref_path)!r} is {ref_shape[1]}x{ref_shape[0]}; all images of "
                        "this dataset must share one size: replace or delete the odd file")
            out[start:start + len(chunk)] = torch.stack(images).numpy()
        else:
            # Group by source shape so each group is resized as one batch.
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, img in enumerate(images):
                groups.setdefault(tuple(img.shape), []).append(i)
            for idx in groups.values():
                batch = resize_center_crop(torch.stack([images[i] for i in idx]), size)
                out[[start + i for i in idx]] = batch.numpy()
    if out is None:
        return np.empty((0, 3, size or 0, size or 0), dtype=np.uint8)
    return out


def list_image_files(folder: Path | str) -> list[str]:
    """The image files directly inside ``folder``, sorted by name (as torchvision's ImageFolder).

    Hidden files and names not ending in :data:`IMAGE_EXTENSIONS` are skipped. Paths are
    returned as strings (tens of thousands of ``Path`` objects cost a noticeable second).
    """
    return [path for path, _, _ in scan_image_files(folder, stat=False)]


def scan_image_files(folder: Path | str, stat: bool = True) -> list[tuple[str, int, int]]:
    """Like :func:`list_image_files`, with each file's size (bytes) and mtime (ns).

    One ``scandir`` pass with ``DirEntry.stat()`` is about twice as fast as ``os.stat`` on each
    path, which matters for the cache key of 60,000 files.

    Returns:
        ``[(path, size, mtime_ns), ...]`` sorted by file name; sizes and mtimes are 0 when
        ``stat`` is False.
    """
    prefix = os.path.join(str(folder), "")
    found = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not e.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if not e.is_file():
                continue
            if stat:
                st = e.stat()
                found.append((e.name, st.st_size, st.st_mtime_ns))
            else:
                found.append((e.name, 0, 0))
    found.sort()
    return [(prefix + name, size, mtime) for name, size, mtime in found]
