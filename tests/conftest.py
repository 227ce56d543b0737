"""Fixtures for the unit tests (environment settings live in the root conftest.py)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: tiny-op training loops are faster and steadier that way
    on a small shared machine, where two OpenMP threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
