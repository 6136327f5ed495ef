"""hw_profiles shipped with lasnet-tvm (installed as lasnet_tvm.hw_profiles)."""
