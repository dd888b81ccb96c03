"""The README's main command (the end-to-end CPU demo) runs and ends with a reloadable export."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmprolong_jax import demo

ROOT = Path(__file__).parents[1]


@pytest.mark.skipif(not demo.BUNDLED_PDFS.is_dir(), reason="bundled PDFs (../shared/testdata) absent")
def test_demo_end_to_end(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  proc = subprocess.run([sys.executable, "-m", "mmprolong_jax.demo", "--out", str(tmp_path),
                         "--steps", "6"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1500)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  assert "resumed from step 3" in proc.stdout
  assert "All done" in proc.stdout
  steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, 7))
  assert (tmp_path / "hf_export" / "model.safetensors.index.json").exists()
  assert (tmp_path / "hf_export" / "tokenizer.json").exists()
