"""The optional C extension (service/_speedups.c): the project's metadata is in pyproject.toml.

`optional=True`: where it cannot be compiled (no C compiler), the install goes on without it and
the service runs on the pure-Python path (service/native.py selects).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("service._speedups", ["service/_speedups.c"], optional=True)])
