"""bratskeras: Keras 3 / TensorFlow 3-D brain tumor segmentation on BraTS MRI.

Tensor layout everywhere: (batch, D, H, W, channels), channels last, with
D, H, W the NIfTI voxel axes i, j, k (240 x 240 x 155 for BraTS).
"""

from bratskeras.platform import cpu as _cpu

__version__ = "0.1.0"

# Before anything imports TensorFlow: its oneDNN kernels on for every x86 CPU
# (TensorFlow's own default leaves them off below AVX-512 VNNI/BF16; see bratskeras/platform/cpu.py).
_cpu.prepare_tensorflow()

_LAZY = {
    "build_model": "bratskeras.models",
    "custom_objects": "bratskeras.models",
    "list_models": "bratskeras.core.model_presets",
    "load_model": "bratskeras.models",
}


def __getattr__(name):
    # Lazy so that `import bratskeras` (and `bratskeras --help`) does not pull in TensorFlow;
    # bratskeras.models imports it without its start-up lines (bratskeras.platform.quiet).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bratskeras' has no attribute {name!r}")
