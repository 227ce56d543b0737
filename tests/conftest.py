"""Fixtures for the unit tests (environment settings live in the root conftest.py)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
