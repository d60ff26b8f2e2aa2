"""Surface distances between two binary masks: the HD95 of BraTS, medpy and panoptica.

Surfaces are each mask minus its 6-connected erosion (voxels on the array's
border count as surface). HD95 pools the distances from every surface voxel
of one mask to the nearest surface voxel of the other, in both directions,
and takes their 95th percentile with numpy's linear interpolation.

Those nearest distances are what a Euclidean distance transform of the
other surface's complement gives (medpy, panoptica); nearest-neighbour
queries between the two surfaces' voxel centres give the same numbers (to
rounding) while touching only the surfaces, several times faster on large
smooth masks. `hd95` takes whichever is cheaper for the pair. Arrays are (D, H, W) bool; spacing is the voxel size per axis in mm.
"""

import collections
import hashlib

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_EROSION = ndimage.generate_binary_structure(3, 1)
# Recent results by the masks' content: `evaluate` asks for the same pair
# twice (the voxel-wise WT/TC/ET and the lesion-wise wt/tc/et groups, a
# single lesion and its whole group). Keyed by value, so never stale.
_RECENT = collections.OrderedDict()
_RECENT_SIZE = 32
# Measured on the 2-core VM: a nearest-neighbour query costs about as much per
# surface voxel as the two distance transforms per ~10 voxels of the box.
_POINT_COST_IN_VOXELS = 10


def hd95(pred, ref, spacing=(1.0, 1.0, 1.0)):
    """Pooled 95th-percentile surface distance (mm) of two non-empty bool masks of one shape.

    Example: one voxel at (0, 0, 0) and one at (0, 0, 3) with spacing
    (1, 1, 2): both distances are 6 mm, so 6.0.
    """
    box = bounding_box(pred | ref)
    pred, ref = pred[box], ref[box]
    key = _digest(pred, ref, spacing)
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    pred_surface, ref_surface = surface_mask(pred), surface_mask(ref)
    n_points = int(np.count_nonzero(pred_surface)) + int(np.count_nonzero(ref_surface))
    if n_points * _POINT_COST_IN_VOXELS < pred.size:
        pred_points = np.argwhere(pred_surface) * np.asarray(spacing, dtype=np.float64)
        ref_points = np.argwhere(ref_surface) * np.asarray(spacing, dtype=np.float64)
        to_ref = cKDTree(ref_points, balanced_tree=False).query(pred_points)[0]
        to_pred = cKDTree(pred_points, balanced_tree=False).query(ref_points)[0]
    else:
        # Ragged surfaces (a prediction full of holes): transforms of the box are cheaper.
        to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
        to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    _RECENT[key] = float(np.percentile(np.concatenate([to_ref, to_pred]), 95))
    if len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return _RECENT[key]


def _digest(pred, ref, spacing):
    digest = hashlib.blake2b(repr((pred.shape, tuple(float(s) for s in spacing))).encode(), digest_size=16)
    digest.update(np.packbits(pred).tobytes())
    digest.update(np.packbits(ref).tobytes())
    return digest.hexdigest()


def surface_mask(mask):
    """The voxels of `mask` that its 6-connected erosion removes (bool, same shape)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_EROSION)


def bounding_box(mask, pad=0):
    """Slices of `mask`'s non-zero bounding box grown by `pad` voxels (clipped), or None if empty.

    Three axis projections: far cheaper than find_objects on a whole volume.
    Cropping to it leaves surfaces unchanged: voxels just outside are 0, like
    the zeros binary_erosion assumes beyond the array.
    """
    box = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, size)))
    return tuple(box)
