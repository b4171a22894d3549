"""The package's public names: lazy where heavy, and `refine` stays the function after its submodule is imported."""

from __future__ import annotations

import importlib


def test_refine_is_the_function_even_after_importing_its_module():
    importlib.import_module("refiner_trl.refine")
    import refiner_trl

    assert callable(refiner_trl.refine) and refiner_trl.refine.__name__ == "refine"


def test_every_public_name_resolves():
    import refiner_trl

    for name in refiner_trl.__all__:
        assert getattr(refiner_trl, name) is not None, name
