"""Deployment: self-contained bundles that run a compiled model with TVM's runtime only (see :mod:`.bundle`)."""

from .bundle import Bundle, build_bundle

__all__ = ["Bundle", "build_bundle"]
