"""pip install ./client/python  -- builds the kvtier Python module with the project's CMake.

The build configures the whole repository (two levels up) into build-python/ with tests,
benchmarks and CUDA off, builds only the `kvtier_python` target, and packages the result. It needs
what the C++ build needs (scripts/install-deps.sh) plus pybind11. Set KVTIER_CMAKE_ARGS to pass
extra arguments (e.g. "-DKVTIER_CUDA=ON").
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = REPO / "build-python"
        args = [
            "cmake", "-S", str(REPO), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release", "-DKVTIER_BUILD_TESTS=OFF", "-DKVTIER_BUILD_BENCH=OFF",
            "-DKVTIER_CUDA=OFF", f"-DPYTHON_EXECUTABLE={sys.executable}",
        ] + shlex.split(os.environ.get("KVTIER_CMAKE_ARGS", ""))
        subprocess.check_call(args)
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "kvtier_python",
                               "-j", os.environ.get("KVTIER_JOBS", "2")])
        built = next((build_dir / "client" / "python" / "kvtier").glob("_kvtier*.so"))
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(built), str(target))


setup(
    name="kvtier",
    version="0.1.0",
    description="Python client of the kvtier KV-cache service",
    packages=["kvtier"],
    ext_modules=[Extension("kvtier._kvtier", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy"],
    python_requires=">=3.9",
)
