"""Shared test settings: quiet TensorFlow, a session cache folder, float32 policy restored after each test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# First: importing bratskeras turns oneDNN on before keras imports TensorFlow.
import bratskeras  # noqa: E402,F401

# isort: split
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """Preprocessing caches go to a folder of this test session, never the user's ~/.cache.

    Set in the environment (bratskeras.data.cache.CACHE_ENV), so the CLI run in
    subprocesses uses it too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRATSKERAS_CACHE", str(tmp_path_factory.mktemp("bratskeras-cache")))
        yield


@pytest.fixture(autouse=True)
def _float32_policy():
    """Tests that change the global dtype policy never leak it into others."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained lightweight-unet (base_filters 4) saved as a .keras file without a contract."""
    from bratskeras.models import build_model

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.utils.set_random_seed(0)
    build_model("lightweight-unet", base_filters=4).save(path)
    return path
