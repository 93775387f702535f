"""Checks of how reuse._C is laid out and was built.

The CUDA-enabled build itself is slow (minutes), so it is not redone here;
set REUSE_EXPECT_CUDA_KERNELS=1 to assert that the installed build has CUDA
kernels (e.g. on a CI machine with nvcc after `pip install --no-build-isolation -e .`).
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest

import reuse.ops as ops

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"


def test_sources_have_unique_basenames():
    # ninja names object files by basename; a .cpp and a .cu must not share one.
    stems = [p.stem for p in [*CSRC.glob("*.cpp"), *CSRC.glob("cuda/*.cu")]]
    assert stems and len(stems) == len(set(stems)), sorted(stems)


def test_schemas_are_declared_only_in_reuse_cpp():
    sources = [*CSRC.glob("*.cpp"), *CSRC.glob("*.h"), *CSRC.glob("cuda/*.cu")]
    declaring = sorted(p.name for p in sources if re.search(r"TORCH_LIBRARY\s*\(", p.read_text()))
    assert declaring == ["reuse.cpp"]


@pytest.mark.skipif(
    os.environ.get("REUSE_EXPECT_CUDA_KERNELS") != "1",
    reason="set REUSE_EXPECT_CUDA_KERNELS=1 to require a build with CUDA kernels",
)
def test_build_has_cuda_kernels():
    info = ops.backend_info()
    assert info["backend"] == "compiled", info
    assert info["built_with_cuda"] and info["cuda_kernels"], info
