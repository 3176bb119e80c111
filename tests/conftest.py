import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its cache (generated datasets, finished runs) under one temporary folder per session,
    never into the user's cache. Tests that need a cold store make their own RunStore(tmp_path)."""
    root = tmp_path_factory.getbasetemp() / "lth_cache"
    monkeypatch.setenv("LTH_CACHE", str(root))
    monkeypatch.delenv("LTH_DATA", raising=False)
    return root


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Entry points (lth, notebook set-up) may set PyTorch's thread count; keep it from leaking between tests."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
