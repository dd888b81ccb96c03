"""Our checkpoint (or a training workdir's latest step) -> a folder transformers loads.

  python -m mmprolong_jax.convert.to_hf --ckpt DIR --out DIR [--base_hf_dir DIR] [--dtype bfloat16]

Writes safetensors shards + index + config.json (with our rope_theta and max positions) and, when
`--base_hf_dir` is given, copies its tokenizer/processor/generation files.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from mmprolong_jax import params as params_lib
from mmprolong_jax.convert import hf_io
from mmprolong_jax.convert.mapping import tensor_specs
from mmprolong_jax.model.config import ModelConfig

_COPIED = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
           "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json",
           "processor_config.json", "chat_template.json", "chat_template.jinja",
           "generation_config.json", "video_preprocessor_config.json")


def export(cfg: ModelConfig, flat: dict[str, np.ndarray], out: str | Path,
           base_hf_dir: str | Path | None = None, dtype: str = "keep",
           max_shard_bytes: int = 5 * 2**30) -> Path:
  out = Path(out)
  specs = tensor_specs(cfg)
  missing = sorted({s.path for s in specs} - set(flat))
  if missing:
    raise hf_io.CheckpointError(f"checkpoint lacks parameter {missing[0]}"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))

  def tensors():
    for s in specs:
      x = np.asarray(flat[s.path])
      if tuple(x.shape) != s.our_shape:
        raise hf_io.CheckpointError(f"parameter {s.path} has shape {x.shape}, expected {s.our_shape}")
      y = s.to_hf(x)
      yield s.hf_name, (y if dtype == "keep" else y.astype(dtype))

  hf_io.write_safetensors(out, tensors(), max_shard_bytes)
  hf_cfg = cfg.to_hf_dict()
  if dtype != "keep":
    hf_cfg["dtype"] = dtype
  if base_hf_dir is not None:
    base = Path(base_hf_dir)
    for name in _COPIED:
      if (base / name).exists():
        shutil.copy2(base / name, out / name)
    base_cfg = base / "config.json"
    if base_cfg.exists():  # keep fields we do not model (e.g. torch dtype), ours win
      merged = json.loads(base_cfg.read_text())
      for key in ("rope_scaling", "rope_theta", "text_config", "vision_config"):
        merged.pop(key, None)
      hf_cfg = {**merged, **hf_cfg}
  (out / "config.json").write_text(json.dumps(hf_cfg, indent=2))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--ckpt", required=True, help="our model checkpoint or a training workdir")
  ap.add_argument("--out", required=True)
  ap.add_argument("--base_hf_dir", default=None, help="copy tokenizer/processor files from here")
  ap.add_argument("--dtype", default="keep", choices=["keep", "float32", "bfloat16"])
  ap.add_argument("--max_shard_gb", type=float, default=5.0)
  a = ap.parse_args(argv)
  cfg, flat = params_lib.load_model_checkpoint(a.ckpt)
  out = export(cfg, flat, a.out, a.base_hf_dir, a.dtype, int(a.max_shard_gb * 2**30))
  print(f"wrote {out} ({len(flat)} tensors)")


if __name__ == "__main__":
  main()
