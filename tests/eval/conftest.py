import pytest

from eval_synth import build_benchmark


@pytest.fixture
def bench(tmp_path):
  """A data root (also the image root) of synthetic benchmark files; see eval_synth."""
  return build_benchmark(tmp_path / "data")
