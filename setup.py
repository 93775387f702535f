"""Build script for the `reuse` package and its compiled extension `reuse._C`.

Install for development with::

    pip install --no-build-isolation -e .

The extension always contains the CPU kernels (csrc/*.cpp). CUDA kernels
(csrc/cuda/*.cu) are added when nvcc is found, torch is a CUDA build and the
environment does not set REUSE_CUDA=0. Environment variables read here:

* REUSE_CUDA=0            build the CPU kernels only.
* CUDA_HOME / CUDA_PATH   CUDA toolkit root; found from nvcc when unset.
* TORCH_CUDA_ARCH_LIST    GPU architectures to compile; default "8.0;9.0".
* MAX_JOBS                parallel compile jobs for ninja; default 2.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def read_version() -> str:
    with open(os.path.join(ROOT, "reuse", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", f.read(), re.M)
    if match is None:
        raise RuntimeError("reuse/__init__.py does not define __version__")
    return match.group(1)


def _is_toolkit_root(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime.h")
    )


def find_cuda_home() -> str | None:
    """Return the CUDA toolkit root, or None.

    A user's CUDA_HOME / CUDA_PATH wins. Otherwise /usr/local/cuda is used when
    it holds a toolkit, and last the toolkit that the nvcc on PATH belongs to.
    The nvcc on PATH may be a wrapper script outside the toolkit, so its
    location alone is not trusted: the candidate must contain bin/nvcc and
    include/cuda_runtime.h.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if _is_toolkit_root("/usr/local/cuda"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidate = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_toolkit_root(candidate):
            return candidate
    return None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported, so settle it first.
_cuda_home = find_cuda_home()
if _cuda_home is not None:
    os.environ["CUDA_HOME"] = _cuda_home
os.environ.setdefault("MAX_JOBS", "2")

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def cuda_build_decision() -> tuple[bool, str]:
    """Whether to compile the CUDA kernels, and why (not)."""
    if os.environ.get("REUSE_CUDA", "") == "0":
        return False, "REUSE_CUDA=0"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if _cuda_home is None:
        return False, "nvcc not found (set CUDA_HOME to a CUDA toolkit)"
    if not os.path.isfile(os.path.join(_cuda_home, "bin", "nvcc")):
        return False, f"no bin/nvcc under CUDA_HOME={_cuda_home}"
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        return False, "no csrc/cuda/*.cu sources"
    return True, ""


def wheel_cuda_include_dirs() -> list[str]:
    """Header directories of the nvidia-* wheels installed next to torch.

    torch's CUDA headers include cuBLAS, cuSPARSE, cuSOLVER and others; a bare
    CUDA toolkit may lack them while the wheels torch depends on ship them.
    """
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    pattern = os.path.join(site_packages, "nvidia", "*", "include")
    return [d for d in sorted(glob.glob(pattern)) if os.path.isdir(d)]


def relative_sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def make_extension():
    cpp_sources = relative_sources("csrc/*.cpp")
    cu_sources = relative_sources("csrc/cuda/*.cu")
    # ninja names objects by basename, so a .cpp and a .cu must not share one.
    stems = [os.path.splitext(os.path.basename(p))[0] for p in cpp_sources + cu_sources]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise RuntimeError(f"csrc sources share basenames {clashes}; rename one of each pair")

    # -fno-trapping-math lets GCC vectorise loops with branch-free selects; the
    # kernels never read floating-point exception flags.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    link_flags = ["-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]

    with_cuda, reason = cuda_build_decision()
    if not with_cuda:
        print(f"reuse: building CPU kernels only ({reason})", file=sys.stderr)
        return CppExtension(
            name="reuse._C",
            sources=cpp_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    print(
        f"reuse: building CPU and CUDA kernels (CUDA_HOME={_cuda_home}, "
        f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})",
        file=sys.stderr,
    )
    # The toolkit's own headers come first; the wheel directories only fill gaps.
    include_dirs += [os.path.join(_cuda_home, "include")] + wheel_cuda_include_dirs()
    return CUDAExtension(
        name="reuse._C",
        sources=cpp_sources + cu_sources,
        include_dirs=include_dirs,
        define_macros=[("REUSE_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=link_flags,
    )


class ReuseBuildExtension(BuildExtension.with_options(use_ninja=True)):
    """BuildExtension with object files kept in build/ between builds.

    An editable install builds in a fresh temporary directory each time; keeping
    ninja's objects under build/ means unchanged sources (notably the slow CUDA
    ones) are not recompiled by the next `pip install -e .`.
    """

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(ROOT, "build", f"temp.{sys.implementation.cache_tag}")


setup(
    name="reuse",
    version=read_version(),
    description="Benchmark and toolkit for reusing past training runs",
    packages=find_packages(include=["reuse*"]),
    python_requires=">=3.10",
    install_requires=["torch"],
    ext_modules=[make_extension()],
    cmdclass={"build_ext": ReuseBuildExtension},
    zip_safe=False,
)
