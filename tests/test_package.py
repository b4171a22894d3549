"""The package's public names: lazy where heavy, and `refine` stays the function after its submodule is imported."""

from __future__ import annotations

import importlib
import re
from pathlib import Path


def test_refine_is_the_function_even_after_importing_its_module():
    importlib.import_module("refiner_trl.refine")
    import refiner_trl

    assert callable(refiner_trl.refine) and refiner_trl.refine.__name__ == "refine"


def test_every_public_name_resolves_to_the_object_its_module_defines():
    import refiner_trl

    lazy = refiner_trl._EXPORTS
    eager = {"RefinementTrace": "refine", "refine": "refine", "refine_metrics": "refine"}
    assert set(refiner_trl.__all__) == {*lazy, *eager, "__version__"}
    for name, module in {**lazy, **eager}.items():
        defined = getattr(importlib.import_module(f"refiner_trl.{module}"), name)
        assert getattr(refiner_trl, name) is defined, name
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "(.+)"$', pyproject, flags=re.M).group(1) == refiner_trl.__version__
