"""The suite's tests that read one costly brute force run in one pytest-xdist worker
(``--dist loadgroup`` and the ``xdist_group`` mark, pyproject.toml), so it is computed once.
Were the grouping to stop (it silently does with pytest 9.2: pytest-dev/pytest-xdist#1386),
every test would still pass while recomputing it; this test fails instead."""

import os

import pytest

from tests.oracles.tiny_service import TINY_SERVICE_GROUP


@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_grouped_tests_carry_their_group(request):
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        pytest.skip("not run by pytest-xdist: every test runs in this one process")
    if not request.config.option.loadgroup:
        pytest.skip("run by pytest-xdist without --dist loadgroup (the suite's addopts set it)")
    # xdist's loadgroup schedules by this suffix of the node id
    assert request.node.nodeid.endswith(f"@{TINY_SERVICE_GROUP}"), request.node.nodeid
