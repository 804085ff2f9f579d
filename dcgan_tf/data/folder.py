"""Image files under a folder (--dataset=folder), and CelebA's img_align_celeba/ folder with its partition.

Listing follows symlinks but reaches each folder and file once; files are decoded in the pipeline. A
folder whose images all sit in subfolders is labelled: one class per subfolder, as torchvision's
ImageFolder and Keras' image_dataset_from_directory read it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import ClassVar

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config, is_url
from dcgan_tf.data.base import AUTOTUNE, DataError, KeyedSource, check_some_decode, hold_out, sample_evenly

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')
# Bytes read of one image file at most: far above any photo (a 50-megapixel PNG is about 150 MB), far
# below what a file posing as an image could fill memory with.
MAX_FILE_BYTES = 256 * 2**20
# CelebA's list_eval_partition.txt numbers its splits.
CELEBA_PARTITIONS = {'train': 0, 'validation': 1, 'test': 2}


@dataclasses.dataclass(frozen=True)
class FolderSource(KeyedSource):
    """Image files, decoded on the fly; keys are their paths, labels (if any) their class subfolders'."""

    files: tuple[str, ...] = ()
    labels: np.ndarray | None = dataclasses.field(default=None, compare=False)
    class_names: tuple[str, ...] | None = None

    kind: ClassVar[str] = 'files'

    def key_list(self) -> tuple[str, ...]:
        return self.files

    def describe(self) -> str:
        return 'decoded from files'

    def fetch(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        return keys.map(tf.io.read_file, num_parallel_calls=AUTOTUNE)

    def fetch_marked(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        def read(key: tf.Tensor, end: tf.Tensor, *label: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return tf.cond(end, lambda: tf.constant(b''), lambda: tf.io.read_file(key)), end, *label

        return keys.map(read, num_parallel_calls=AUTOTUNE)


def _local_image_files(data_dir: str) -> tuple[list[str], dict[str, int]]:
    """Image files under a local folder, following symlinks but reaching each folder and file once.

    Returns the files (sorted) and what was left out, counted by reason: 'second name' for folders or
    files reached again (a link back up the tree, sub/loop -> .., would otherwise be walked until the
    path grew too long, counting every file dozens of times), 'not a file' for FIFOs, sockets and devices
    with an image's name (reading /dev/zero fills memory, a FIFO blocks forever), 'too large' for files
    over MAX_FILE_BYTES.
    """

    def status(path: str) -> os.stat_result | None:
        try:
            return os.stat(path)  # Follows links: a link and its target are one folder or file.
        except OSError:
            return None  # A dangling link: listed, then skipped (and counted) like any unreadable file.

    def identity(st: os.stat_result | None) -> tuple[int, int] | None:
        return None if st is None else (st.st_dev, st.st_ino)

    left_out = {'second name': 0, 'not a file': 0, 'too large': 0}
    seen_dirs, candidates = {identity(status(data_dir))}, []
    for root, dirs, names in os.walk(data_dir, followlinks=True):
        kept = []
        for name in sorted(dirs):  # Sorted, so which of two names for a folder is kept never varies.
            key = identity(status(os.path.join(root, name)))
            if key is None or key in seen_dirs:
                left_out['second name'] += key is not None
                continue
            seen_dirs.add(key)
            kept.append(name)
        dirs[:] = kept
        candidates.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    files, seen_files = [], set()
    for path in sorted(candidates):
        st = status(path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            left_out['not a file'] += 1
            continue
        if st is not None and st.st_size > MAX_FILE_BYTES:
            left_out['too large'] += 1
            continue
        key = identity(st)
        if key is not None and key in seen_files:
            left_out['second name'] += 1
            continue
        seen_files.add(key)
        files.append(path)
    return files, left_out


def list_image_files(data_dir: str) -> list[str]:
    """Every image file under `data_dir`, recursively, in a stable (sorted) order.

    Symlinked files and folders are followed, but a folder or file reached under a second name (a
    symlink loop, an alias, a hard link) is listed once, and FIFOs, sockets, devices and files over
    MAX_FILE_BYTES are left out, each with a warning. URL-style paths go to gfile.
    """
    if is_url(data_dir):
        files = []
        for root, _, names in tf.io.gfile.walk(data_dir):
            files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        return sorted(files)
    files, left_out = _local_image_files(data_dir)
    if left_out['second name']:
        logging.warning(
            '--data_dir=%s: left out %d symlinked folder(s) or file(s) that lead to ones already listed '
            '(a symlink loop or a second name); each image is read once.',
            data_dir,
            left_out['second name'],
        )
    if left_out['not a file']:
        logging.warning(
            '--data_dir=%s: left out %d image name(s) that are not regular files (FIFOs, sockets, devices, '
            'or symlinks to them), which would block or fill memory if read.',
            data_dir,
            left_out['not a file'],
        )
    if left_out['too large']:
        logging.warning(
            '--data_dir=%s: left out %d file(s) over %d MB, more than any image this reads.',
            data_dir,
            left_out['too large'],
            MAX_FILE_BYTES // 2**20,
        )
    return files


def _class_subfolders(
    data_dir: str, files: list[str]
) -> tuple[tuple[str, ...] | None, np.ndarray | None, str]:
    """The folder's classes: (sorted names, each file's label, '') when every file sits under a subfolder
    of `data_dir` (the first one names its class, however deep the file lies), else (None, None, why not).
    """
    tops = []
    for path in files:
        parts = path[len(data_dir) :].replace(os.sep, '/').lstrip('/').split('/')
        tops.append(parts[0] if path.startswith(data_dir) and len(parts) > 1 else None)
    at_top = tops.count(None)
    if at_top:
        where = 'its images lie' if at_top == len(files) else f'{at_top} of its images lie'
        return None, None, f'{where} directly in --data_dir, not in one subfolder per class'
    names = tuple(sorted(set(tops)))
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[top] for top in tops], np.int64), ''


def folder_source(
    cfg: Config, split: str, name: str = 'folder', partitions: dict[str, int] | None = None
) -> FolderSource:
    files = list_image_files(cfg.data_dir)
    if not files:
        raise DataError(f'--data_dir={cfg.data_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
    # Classes from the whole listing, before any split, so every split numbers them alike.
    class_names, labels, hint = _class_subfolders(cfg.data_dir, files)
    keep = np.arange(len(files))
    if partitions is not None:  # CelebA's official train/validation/test partition.
        wanted = CELEBA_PARTITIONS['train' if cfg.eval_holdout else split]
        keep = np.array(
            [i for i, f in enumerate(files) if partitions.get(os.path.basename(f)) == wanted], int
        )
        if not len(keep):
            raise DataError(f'No image of {cfg.data_dir} is in the {split} part of list_eval_partition.txt.')
    keep = hold_out(keep, split, cfg.eval_holdout, cfg.data_dir)
    files = [files[i] for i in keep]
    check_some_decode(cfg, sample_evenly(files), lambda f: tf.io.read_file(f), f'--data_dir={cfg.data_dir}')
    return FolderSource(
        name=f'{name}:{cfg.data_dir}',
        files=tuple(files),
        labels=None if labels is None else labels[keep],
        class_names=class_names,
        label_hint=hint,
    )


def celeba_folder(cfg: Config, split: str) -> FolderSource | None:
    """CelebA from its img_align_celeba/ folder (the usual escape when tfds' download fails)."""
    if not cfg.data_dir or is_url(cfg.data_dir) or not os.path.isdir(cfg.data_dir):
        return None
    image_dir = cfg.data_dir
    if os.path.isdir(os.path.join(cfg.data_dir, 'img_align_celeba')):
        image_dir = os.path.join(cfg.data_dir, 'img_align_celeba')
    if not any(n.lower().endswith('.jpg') for n in os.listdir(image_dir)):
        return None  # A tfds data_dir, not the folder.
    partitions = None
    for folder in (image_dir, os.path.dirname(os.path.abspath(image_dir))):
        path = os.path.join(folder, 'list_eval_partition.txt')
        if os.path.isfile(path):
            with open(path) as f:
                partitions = dict((n, int(p)) for n, p in (line.split() for line in f if line.strip()))
            break
    return folder_source(cfg.replace(data_dir=image_dir), split, 'celeb_a folder', partitions)
