"""Build the Cython kernels, with OpenMP where the compiler has it.

Every ``fastdiv/backends/_cython/*.pyx`` becomes an extension module. OpenMP
is detected by compiling a small program; without it the kernels are built
serially, so an install never fails for lack of OpenMP.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

_OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _compiler() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def has_openmp() -> bool:
    """True when the C compiler builds and links an OpenMP program."""
    if os.environ.get("FASTDIV_NO_OPENMP"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_OPENMP_PROBE)
        try:
            done = subprocess.run(
                _compiler() + ["-fopenmp", src, "-o", os.path.join(tmp, "probe")],
                capture_output=True,
            )
        except OSError:
            return False
    return done.returncode == 0


def accepts_flag(flag: str) -> bool:
    """True when the C compiler compiles an empty function with ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int fastdiv_probe(void) { return 0; }\n")
        try:
            done = subprocess.run(
                _compiler() + ["-Werror", flag, "-c", src, "-o", src + ".o"],
                capture_output=True,
            )
        except OSError:
            return False
    return done.returncode == 0


def extensions() -> list[Extension]:
    openmp = has_openmp()
    print(
        f"fastdiv: building the Cython kernels {'with' if openmp else 'without'} "
        "OpenMP",
        file=sys.stderr,
    )
    # -fno-math-errno lets GCC call the vector exp/log of glibc's libmvec
    # (declared SIMD-callable in fastdiv_math.h); no flag may assume the
    # absence of NaN or inf (no -ffast-math). -ffp-contract=off keeps a * b - c
    # from becoming one fused multiply-add on FMA machines: the softmax
    # kernels rely on x * a - max * a being exactly 0 at the maximum.
    # -fno-trapping-math lets GCC evaluate both arms of a select such as
    # "p == 0 ? 0 : p * log(q)" before choosing: without it only the AVX-512
    # clones (masked operations) vectorised the divergence sums, and the
    # AVX2 clones called the scalar log (2.3-3.3x slower in float32). It
    # assumes nothing about NaN or inf; nothing here reads the FP flags.
    compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    compile_args.append("-ffp-contract=off")
    # GCC keeps to 256-bit vectors even in the AVX-512 clones of the hot
    # loops (fastdiv_math.h) unless told otherwise; other code is compiled
    # for baseline x86-64, where the flag changes nothing.
    if accepts_flag("-mprefer-vector-width=512"):
        compile_args.append("-mprefer-vector-width=512")
    link_args = []
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    extra = os.environ.get("FASTDIV_CFLAGS", "").split()
    here = os.path.dirname(os.path.abspath(__file__))
    headers = [
        os.path.join("fastdiv", "backends", "_cython", name)
        for name in ("fastdiv_math.h", "fastdiv_log8.h", "fastdiv_exp8.h")
    ]
    sources = sorted(glob(os.path.join("fastdiv", "backends", "_cython", "*.pyx")))
    # FASTDIV_BUILD_ONLY=_softmax,_omp builds only those modules (development).
    only = os.environ.get("FASTDIV_BUILD_ONLY")
    if only:
        keep = {name.strip() for name in only.split(",")}
        sources = [s for s in sources if os.path.basename(s)[:-4] in keep]
    return [
        Extension(
            "fastdiv.backends._cython." + os.path.basename(src)[:-4],
            [src],
            include_dirs=[
                np.get_include(),
                os.path.join(here, "fastdiv", "backends", "_cython"),
            ],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
            depends=headers,
            extra_compile_args=compile_args + extra,
            extra_link_args=link_args + (["-lm"] if shutil.which("gcc") else []),
        )
        for src in sources
    ]


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
