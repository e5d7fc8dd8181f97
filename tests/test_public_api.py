"""Every package and public module declares a sorted ``__all__`` of names it really defines."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

_PACKAGES = ("drimbox", "dicomweb", "registry", "certification")


def _public_modules() -> list[str]:
    names = []
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            parts = info.name.split(".")
            if any(part.startswith("_") for part in parts) or "migrations" in parts:
                continue
            names.append(info.name)
    return sorted(names)


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022's "isort-style" order: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module_name", _public_modules())
def test_module_all_is_sorted_and_defined(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert not [
            n
            for n in vars(module)
            if not n.startswith("_")
            and callable(vars(module)[n])
            and getattr(vars(module)[n], "__module__", None) == module_name
        ], f"{module_name} defines public callables but no __all__"
        return
    assert list(exported) == sorted(exported, key=_isort_key), (
        f"{module_name}.__all__ is not sorted (ruff RUF022 order)"
    )
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names undefined {missing}"
