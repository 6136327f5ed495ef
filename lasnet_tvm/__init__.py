"""lasnet-tvm: compile latency-aware spatially dynamic CNNs (LASNet) with TVM and predict their latency."""

__version__ = "0.1.0"

from .errors import LasnetError  # noqa: E402

__all__ = ["LasnetError", "__version__"]
