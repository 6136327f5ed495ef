"""Shared test configuration: ``gpu`` tests run only where TVM sees a CUDA device; the user profile folder is a
fresh one (the user's own profiles never leak into tests); tiny compiled models are built once per session;
no TVM ``popen_worker`` process outlives the session."""

import functools
import os

import pytest


@functools.cache
def _has_cuda() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:  # no CUDA runtime at all
        return False


def pytest_configure(config):
    import tempfile

    # profile-device writes, and --device NAME looks, in the user profile folder: one of the test session's own
    os.environ["LASNET_TVM_PROFILES"] = tempfile.mkdtemp(prefix="lasnet-tvm-profiles-")
    from _procs import MARK

    os.environ.setdefault(MARK, str(os.getpid()))  # inherited by every process the tests start


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(os.environ.get("LASNET_TVM_PROFILES", ""), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="no CUDA GPU visible to TVM")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a TVM ``popen_worker`` started under it is still running (each holds ~400 MB)."""
    from _procs import popen_workers, stop

    left = popen_workers()
    if left:
        stop(left)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        msg = (f"ERROR: {len(left)} TVM popen_worker process(es) outlived the tests: {left} (stopped now); every "
               "test that starts a tracker, server or pool must stop it")
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(msg, red=True)


#: (arch, granularity, width) of the tiny models compiled once per session, 64x64 inputs, 7 classes.
TINY = {
    "las_resnet50": ("4-4-2-1", 0.25),
    "las_resnet101": ("4-4-2-1", 0.25),
    "las_regnety_400mf": ("2-4-2-1", 0.5),
    "las_regnety_800mf": ("2-4-2-1", 0.5),
}
TINY_SIZE = 64


@pytest.fixture(scope="session")
def compiled_tiny(tmp_path_factory):
    """``get(arch) -> (model, model.pt, model.so, CompileResult)``: a randomized tiny model, its checkpoint, its
    compiled library (manifest beside it) and the compile result, built on first use and shared by the session.
    Copy the files before changing them."""
    from lasnet_tvm.checkpoint import save_checkpoint
    from lasnet_tvm.compiler import compile_model, save_artifact
    from lasnet_tvm.models import build_model
    from lasnet_tvm.targets import resolve_target
    from model_utils import randomize_

    cache = {}

    def get(arch="las_resnet50"):
        if arch not in cache:
            gran, width = TINY[arch]
            folder = tmp_path_factory.mktemp(arch)
            model = randomize_(build_model(arch, gran, TINY_SIZE, 7, width), seed=3)
            pt = save_checkpoint(folder / "model.pt", model)
            result = compile_model(model, resolve_target("llvm"), source=str(pt))
            so = save_artifact(result.executable, folder / "model.so", result.manifest)
            cache[arch] = (model, pt, so, result)
        return cache[arch]

    return get
