"""Only what pyproject.toml cannot say: the C extensions built from native/
(agent.codec._native through cffi, agent.codec._frames as a plain extension;
native/build_codec.py describes both)."""
import importlib.util
import pathlib

from setuptools import setup

_spec = importlib.util.spec_from_file_location(
    "nodemesh_build_codec", pathlib.Path(__file__).resolve().parent / "native" / "build_codec.py")
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

setup(cffi_modules=["native/build_codec.py:ffibuilder"], ext_modules=[_build.frames_extension(), _build.ordered_extension()])
