"""The plugin's own tests: microfw's contract checks, as every plugin author can run them."""

import numpy as np
from microfw_softsign import Softsign

import microfw
import microfw.testing


def test_contract_and_gradient_checks() -> None:
    checks = microfw.testing.check_plugin(Softsign)
    assert "check_activation_gradient" in checks


def test_values() -> None:
    x = np.array([-3.0, 0.0, 1.0])
    np.testing.assert_allclose(Softsign().forward(x), [-0.75, 0.0, 0.5])


def test_found_through_the_entry_point() -> None:
    entry = microfw.Registry().entry("activation", "softsign")
    assert entry.cls is Softsign
    assert entry.provenance.package == "microfw-softsign"
