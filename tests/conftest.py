"""``--long`` runs the long fault-injection trials (tests marked ``long``); ``make test`` skips them."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="also run the long fault-injection trials")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long fault-injection trial: run with `pytest tests/faults --long`")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
