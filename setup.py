"""The optional C parts of the media node; everything else is configured in pyproject.toml.

- media/_fastpath.c: the send loop and the receive path's unprotect and parse;
- media/_rate.c: aiortc's receive-side bandwidth estimator, the same arithmetic in the same order (no fused
  multiply-add, so the same REMBs as aiortc's Python for the same packets).

Both are optional: where they cannot be built (no C compiler, no Python headers) the install goes on without them
and the media node uses its pure-Python paths (media/sending.py ``send_path()``, media/receiving.py
``receive_path()``) and aiortc's own estimator.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "media._fastpath",
            sources=["media/_fastpath.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "media._rate",
            sources=["media/_rate.c"],
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        ),
    ]
)
