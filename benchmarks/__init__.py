"""Benchmarks of lasnet-tvm (installed as lasnet_tvm.benchmarks; run them with `lasnet-tvm bench ...`)."""
