"""Hugging Face Qwen2.5-VL folder -> our Orbax model checkpoint.

  python -m mmprolong_jax.convert.from_hf --hf_dir DIR --out DIR [--rope_theta 4e6] [--dtype keep]

Streams tensor by tensor: host memory stays near one copy of the weights (in the stored dtype).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmprolong_jax import params as params_lib
from mmprolong_jax.convert import hf_io
from mmprolong_jax.convert.mapping import tensor_specs
from mmprolong_jax.model.config import ModelConfig


def convert(hf_dir: str | Path, out: str | Path | None = None, dtype: str = "keep",
            rope_theta: float | None = None):
  """Returns (cfg, flat params); also writes the checkpoint when `out` is given."""
  hf_dir = Path(hf_dir)
  if not (hf_dir / "config.json").exists():
    raise FileNotFoundError(f"{hf_dir} has no config.json")
  cfg = ModelConfig.from_hf(hf_dir)
  if rope_theta is not None:
    cfg = cfg.replace_text(rope_theta=float(rope_theta))
  specs = {s.hf_name: s for s in tensor_specs(cfg)}
  flat: dict[str, np.ndarray] = {}
  seen = set()
  tied = cfg.text.tie_word_embeddings
  for name, x in tqdm(hf_io.iter_hf_tensors(hf_dir), total=len(specs), desc="tensors", unit="t"):
    if tied and name == "lm_head.weight":
      continue  # some tied exports still carry the (identical) head
    spec = specs.get(name)
    if spec is None:
      raise hf_io.CheckpointError(f"unexpected tensor {name} (not part of a Qwen2.5-VL model with this config)")
    if name in seen:
      raise hf_io.CheckpointError(f"tensor {name} appears twice")
    hf_io.check_tensor(spec, x)
    y = spec.to_ours(x)
    flat[spec.path] = y if dtype == "keep" else y.astype(dtype)
    seen.add(name)
  missing = sorted(set(specs) - seen)
  if missing:
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    raise hf_io.CheckpointError(f"missing tensor {missing[0]}{more}")
  if out is not None:
    params_lib.save_model_checkpoint(out, flat, cfg)
  return cfg, flat


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--hf_dir", required=True, help="folder with config.json and *.safetensors")
  ap.add_argument("--out", required=True, help="output checkpoint folder")
  ap.add_argument("--dtype", default="keep", choices=["keep", "float32", "bfloat16"],
                  help="stored parameter dtype (keep = as in the HF files)")
  ap.add_argument("--rope_theta", type=float, default=None,
                  help="override the mRoPE base (the study trains 128K with 4e6)")
  a = ap.parse_args(argv)
  cfg, flat = convert(a.hf_dir, a.out, a.dtype, a.rope_theta)
  n = sum(x.size for x in flat.values())
  print(f"wrote {a.out}: {len(flat)} tensors, {n / 1e9:.3f}B parameters, rope_theta={cfg.text.rope_theta:g}")


if __name__ == "__main__":
  main()
