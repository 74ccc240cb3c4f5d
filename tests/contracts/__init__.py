"""Shared contract test classes: each implementation's test module subclasses one (tests import them from here)."""

import pkgutil

import pytest

# Plain asserts in the contract modules explain their failures too, as in a test file.
pytest.register_assert_rewrite(*(f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__)
                                 if not module.name.startswith("test_")))
