"""Start-up without noise: ``import_keras`` imports Keras (and probes the backend's devices) with TensorFlow's
C++ start-up lines filtered out of file descriptor 2, real errors kept."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

#: TensorFlow/absl/CUDA start-up lines that say nothing on a CPU machine (matched per line on fd 2)
STARTUP_NOISE = (
    r"All log messages before absl::InitializeLog\(\) is called",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
)
#: only where the machine has no NVIDIA device: the failed CUDA probe is expected there
NO_GPU_NOISE = (r"failed call to cuInit", r"cuda_diagnostics\.cc", r"no NVIDIA GPU device is present")


def _has_nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def import_keras():
    """``import keras`` (and initialise its backend's devices) with TF's C++ start-up lines filtered out.

    absl writes "All log messages before absl::InitializeLog()", the oneDNN/CUDA notes and, on a machine
    without a GPU, "failed call to cuInit" straight to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says;
    so the import and the first device query run with fd 2 captured, and every captured line that is not
    such start-up noise (``STARTUP_NOISE``; ``NO_GPU_NOISE`` only without an NVIDIA device) is written back:
    real errors still show. ``NLWU_TF_LOGS=1`` keeps every line."""
    if "keras" in sys.modules or os.environ.get("NLWU_TF_LOGS") == "1":
        import keras  # Keras/TensorFlow (seconds) only when a run trains

        return keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    patterns = STARTUP_NOISE + (() if _has_nvidia_device() else NO_GPU_NOISE)
    noise = re.compile("|".join(patterns))
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), 2)
            try:
                import keras  # Keras/TensorFlow (seconds) only when a run trains

                if keras.backend.backend() == "tensorflow":
                    import tensorflow as tf  # the backend's own device probe, inside the capture

                    tf.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) happens here, captured
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not noise.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return keras
