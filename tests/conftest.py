"""Shared test configuration: ``gpu`` tests run only where TVM sees a CUDA device."""

import functools

import pytest


@functools.cache
def _has_cuda() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:  # no CUDA runtime at all
        return False


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="no CUDA GPU visible to TVM")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
