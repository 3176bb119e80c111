import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its cache (generated datasets, finished runs) under one temporary folder per session,
    never into the user's cache. Tests that need a cold store make their own RunStore(tmp_path)."""
    root = tmp_path_factory.getbasetemp() / "lth_cache"
    monkeypatch.setenv("LTH_CACHE", str(root))
    monkeypatch.delenv("LTH_DATA", raising=False)
    return root
