import numpy as np
import pytest

import flowgrad as fg


@pytest.fixture(autouse=True)
def _fresh_default_graph():
    """Each test starts with an empty module-level default graph."""
    fg.reset_default_graph()
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
