"""The analytic latency predictor of the LASNet paper (Sec. 3.3, Appendix A) and hardware profiles."""

from .kernel_ops import predict_step, step_ops
from .network import BlockLatency, NetworkLatency, predict_block, predict_network, predict_spec
from .ops import Op, OpLatency, op_latency
from .profiles import HardwareProfile, get_profile, known_devices, load_profile, local_profile_path
from .search import SearchResult, search_granularity, stage_candidates

__all__ = [
    "BlockLatency", "NetworkLatency", "predict_block", "predict_network", "predict_spec", "Op",
    "OpLatency", "op_latency", "HardwareProfile", "get_profile", "known_devices", "load_profile",
    "local_profile_path", "SearchResult", "search_granularity", "stage_candidates", "predict_step", "step_ops",
]
