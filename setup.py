"""Install lasnet-tvm; ``kernels/``, ``hw_profiles/``, ``schedules/`` and ``benchmarks/`` ship inside the package."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "lasnet_tvm" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",  # 0.1.15 segfaults in ToJSONGraph (MetaSchedule, save_json)
    "torch==2.13.0",
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",  # Spearman correlation and least-squares fits (predictor calibration)
    "xgboost-cpu==3.2.0",
    "psutil>=5.9",
    "cloudpickle>=3.0",
    "click>=8.1,<9",
    "pyyaml>=6.0,<7",
    "tqdm>=4.66,<5",
    "matplotlib>=3.8,<4",
    "pillow>=10",
    "tornado>=6.4,<7",  # TVM's RPC tracker (lasnet-tvm tune --tracker)
]
BENCH_EXTRAS = ["onnxruntime==1.32.0", "onnx==1.23.2", "onnxscript==0.7.2"]
# CUDA archs older than sm_75 (V100, Jetson Nano/TX2/Xavier), which CUDA 13 refuses: NVRTC 12, CUDA 12's headers,
# ptxas 12 (about 340 MB installed, so not part of "test")
CUDA_LEGACY_EXTRAS = ["nvidia-cuda-nvrtc-cu12>=12.4,<13", "nvidia-cuda-runtime-cu12>=12.4,<13",
                      "nvidia-cuda-nvcc-cu12>=12.4,<13", "nvidia-cuda-cccl-cu12>=12.4,<13"]

setup(
    name="lasnet-tvm",
    version=VERSION,
    description="Compile latency-aware spatially dynamic CNNs (LASNet) with TVM and predict their latency",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Every package under lasnet_tvm/ (compiler.passes included), plus the top-level data folders.
    packages=find_packages(include=["lasnet_tvm", "lasnet_tvm.*"])
    + ["lasnet_tvm.kernels", "lasnet_tvm.hw_profiles", "lasnet_tvm.schedules", "lasnet_tvm.benchmarks"],
    # The top-level folders of the repository are sub-packages of the installed package.
    package_dir={
        "lasnet_tvm.kernels": "kernels",
        "lasnet_tvm.hw_profiles": "hw_profiles",
        "lasnet_tvm.schedules": "schedules",
        "lasnet_tvm.benchmarks": "benchmarks",
    },
    package_data={
        "lasnet_tvm.hw_profiles": ["*.yaml"],
        "lasnet_tvm.schedules": ["*/*.json", "*/*.yaml", "*/*/*.json"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # other runtimes of `lasnet-tvm bench model --baseline` (the static model exported by torch.onnx)
        "bench": BENCH_EXTRAS,
        # CUDA libraries for sm_53 ... sm_72 (`lasnet-tvm compile --target "cuda -arch=sm_72"`)
        "cuda-legacy": CUDA_LEGACY_EXTRAS,
        "test": ["pytest==9.0.3", "pytest-timeout==2.4.0", "hypothesis>=6.100,<7", *BENCH_EXTRAS],
    },
    entry_points={"console_scripts": ["lasnet-tvm=lasnet_tvm.cli.main:main"]},
)
