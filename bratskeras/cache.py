"""On-disk cache of preprocessed cases as memory-mappable .npy files.

Each case is stored once per key in `<cache_dir>/<case id>-<key>/`:

    image.npy   float32 or float16 (d, h, w, C), z-scored and cropped
    seg.npy     uint8 class indices (d, h, w)      (absent for unlabelled cases)
    fg.npy      int32 (K, 3) coordinates of tumor voxels, for oversampling
    meta.json   id, key, modalities, settings, geometry, affine, spacing, shape

The key hashes every source file's path, size and mtime, the modalities and
the preprocessing settings, so a rewritten file or a changed setting gives a
new key and is never served stale. Entries are written into a temporary
folder and renamed into place, so a crash never leaves a half-written entry.
Old entries are left in place (a setting switched back is served again).
"""

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bratskeras import layouts, preprocessing, volumes

# Part of every key: bump when preprocessing changes what a case becomes (2: a constant
# non-zero background is background, preprocessing.background_value).
CACHE_VERSION = 2
# Enough tumor voxels to centre patches anywhere in the tumor, few enough to stay small.
MAX_FOREGROUND_COORDS = 200_000


@dataclass
class CachedCase:
    """A preprocessed case in the cache. `load()` memory-maps its arrays."""

    id: str
    folder: str
    meta: dict

    @property
    def has_seg(self):
        return os.path.exists(os.path.join(self.folder, "seg.npy"))

    def load(self):
        """(image (d, h, w, C), seg uint8 (d, h, w) or None, fg int32 (K, 3)), memory-mapped."""
        image = np.load(os.path.join(self.folder, "image.npy"), mmap_mode="r")
        seg = np.load(os.path.join(self.folder, "seg.npy"), mmap_mode="r") if self.has_seg else None
        fg = np.load(os.path.join(self.folder, "fg.npy"))
        return image, seg, fg


def source_stats(paths):
    """[absolute path, size, mtime in ns] per file: what a cache key trusts instead of reading."""
    stats = []
    for path in paths:
        stat = os.stat(path)
        stats.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
    return stats


def digest(payload):
    """Short hex digest of a JSON-able payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def cache_key(case, modalities, settings):
    """Hex digest over source paths+sizes+mtimes, modalities, settings and CACHE_VERSION."""
    payload = {"version": CACHE_VERSION, "sources": source_stats(case.source_files()), "modalities": list(modalities),
               "settings": settings.to_dict(), "channel_order": list(case.channel_order)}
    return digest(payload)


def cache_case(case, cache_dir, modalities=layouts.MODALITIES, settings=preprocessing.PreprocessSettings()):
    """Returns the CachedCase for `case`, preprocessing it first if its key is not cached.

    Raises:
        DataError: the case cannot be read (see volumes.read_case).
    """
    key = cache_key(case, modalities, settings)
    folder = os.path.join(os.fspath(cache_dir), f"{case.id}-{key}")
    if not os.path.exists(os.path.join(folder, "meta.json")):
        _write_entry(case, folder, key, modalities, settings)
    with open(os.path.join(folder, "meta.json")) as handle:
        return CachedCase(id=case.id, folder=folder, meta=json.load(handle))


def _write_entry(case, folder, key, modalities, settings):
    image, seg, properties = volumes.read_case(case, modalities)
    image, seg, geometry = preprocessing.preprocess(image, seg, settings, spacing=properties["spacing"])
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{case.id}-", dir=parent)
    try:
        np.save(os.path.join(tmp, "image.npy"), image)
        if seg is not None:
            np.save(os.path.join(tmp, "seg.npy"), seg)
        np.save(os.path.join(tmp, "fg.npy"), _foreground_coords(seg, key))
        meta = {"id": case.id, "key": key, "layout": case.layout, "modalities": list(modalities),
                "settings": settings.to_dict(), "geometry": geometry,
                "affine": np.asarray(properties["affine"]).tolist(),
                "spacing": list(properties["spacing"]), "shape": list(image.shape[:3]),
                "source_shape": list(properties["shape"]), "files": properties["files"]}
        with open(os.path.join(tmp, "meta.json"), "w") as handle:
            json.dump(meta, handle)
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        # Another worker renamed the same entry into place first: that one is complete.
        if not os.path.exists(os.path.join(folder, "meta.json")):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _foreground_coords(seg, key):
    """int32 (K, 3) tumor voxel coordinates, subsampled (seeded by the key) above MAX_FOREGROUND_COORDS."""
    if seg is None:
        return np.zeros((0, 3), dtype=np.int32)
    coords = np.argwhere(seg > 0).astype(np.int32)
    if len(coords) > MAX_FOREGROUND_COORDS:
        rng = np.random.default_rng(int(key[:8], 16))
        coords = coords[np.sort(rng.choice(len(coords), MAX_FOREGROUND_COORDS, replace=False))]
    return coords


def cache_dataset(cases, cache_dir, modalities=layouts.MODALITIES, settings=preprocessing.PreprocessSettings(),
                  workers=2):
    """Caches every case (in `workers` threads; gzip and file reads release the GIL).

    Returns:
        list of CachedCase in the order of `cases`.
    """
    def one(case):
        return cache_case(case, cache_dir, modalities, settings)

    if workers <= 1:
        return [one(case) for case in cases]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, cases))
