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

Where the cache lives (`cache_dir_for`): a folder the user names
(`--cache-dir`), else a per-user cache, never the dataset folder (shared
datasets are often read-only): `$BRATSKERAS_CACHE`, else
`$XDG_CACHE_HOME/bratskeras`, else `~/.cache/bratskeras`, with one
sub-folder per dataset (its folder name and a hash of its absolute path), so
one dataset's cache can be found and deleted on its own.
"""

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bratskeras.data import layouts, preprocessing, volumes

# The per-user cache root: this variable names it, else CACHE_FOLDER under the user's cache home.
CACHE_ENV = "BRATSKERAS_CACHE"
CACHE_FOLDER = "bratskeras"
# Part of every key: bump when preprocessing changes what a case becomes (2: a constant
# non-zero background is background, preprocessing.background_value).
CACHE_VERSION = 2
# Enough tumor voxels to centre patches anywhere in the tumor, few enough to stay small.
MAX_FOREGROUND_COORDS = 200_000


def cache_root():
    """The per-user cache folder: $BRATSKERAS_CACHE, else $XDG_CACHE_HOME/bratskeras or ~/.cache/bratskeras."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(home), CACHE_FOLDER)


def cache_dir_for(data_dir, cache_dir=None):
    """The cache folder of dataset `data_dir`: `cache_dir` when given (used as is), else
    cache_root()/<data folder name>-<12 hex digits of its absolute path's hash>."""
    if cache_dir:
        return os.fspath(cache_dir)
    absolute = os.path.abspath(os.fspath(data_dir))
    name = os.path.basename(absolute.rstrip(os.sep)) or "root"
    return os.path.join(cache_root(), f"{name}-{hashlib.sha256(absolute.encode()).hexdigest()[:12]}")


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
                  workers=2, progress=None):
    """Caches every case (in `workers` threads; gzip and file reads release the GIL).

    Args:
        progress: called as progress(done, total) each time a case is
            ready (in the calling thread), or None.

    Returns:
        list of CachedCase in the order of `cases`.
    """
    def one(case):
        return cache_case(case, cache_dir, modalities, settings)

    cases = list(cases)
    results = []
    if workers <= 1:
        for case in cases:
            results.append(one(case))
            _report(progress, len(results), len(cases))
        return results
    with ThreadPoolExecutor(workers) as pool:
        for cached in pool.map(one, cases):  # in order: a slow case holds back the count, never the result
            results.append(cached)
            _report(progress, len(results), len(cases))
    return results


def _report(progress, done, total):
    if progress is not None:
        progress(done, total)
