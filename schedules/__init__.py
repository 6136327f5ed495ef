"""schedules shipped with lasnet-tvm (installed as lasnet_tvm.schedules)."""
