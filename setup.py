"""The optional C send loop (media/_fastpath.c); everything else is configured in pyproject.toml.

The extension is optional: where it cannot be built (no C compiler, no Python headers) the install goes on
without it and the media node sends through its pure-Python loop (media/sending.py, ``send_path()``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "media._fastpath",
            sources=["media/_fastpath.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
