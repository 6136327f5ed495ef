"""Where the shipped data lives: hardware profiles and tuned schedules (installed as package data)."""

from __future__ import annotations

from pathlib import Path


def _package_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(f"lasnet_tvm.{name}").__file__).parent


def hw_profiles_dir() -> Path:
    """Folder of the shipped hardware profiles (``hw_profiles/*.yaml``)."""
    return _package_dir("hw_profiles")


def schedules_dir() -> Path:
    """Folder of the shipped tuned schedule databases (``schedules/<device>/``)."""
    return _package_dir("schedules")
