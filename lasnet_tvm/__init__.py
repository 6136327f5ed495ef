"""lasnet-tvm: compile latency-aware spatially dynamic CNNs (LASNet) with TVM and predict their latency."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Installed, ``kernels/``, ``hw_profiles/``, ``schedules/`` and ``benchmarks/`` are sub-packages of this one
# (setup.py's package_dir). Imported from a source checkout (the repository root on sys.path, as for
# ``python -c`` or a worker process started there), they are found beside the package instead.
_ROOT = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "kernels").is_dir() and (_ROOT / "kernels" / "__init__.py").is_file():
    __path__.append(str(_ROOT))  # noqa: F821 (the package's own __path__)

from .errors import LasnetError  # noqa: E402

__all__ = ["LasnetError", "__version__"]
