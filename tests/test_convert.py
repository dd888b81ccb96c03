"""HF <-> ours conversion: round trips, transformers loading our export, malformed inputs."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

from mmprolong_jax.convert import from_hf, hf_io, to_hf
from tests import hf_reference as ref


def _read_all(d):
  out = {}
  for f in hf_io.safetensor_files(d):
    out.update(load_file(str(f)))
  return out


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hf_dir(request, tmp_path_factory):
  model = ref.build_hf_model(ref.tiny_hf_config(tied=request.param), seed=3)
  d = tmp_path_factory.mktemp("hf")
  model.save_pretrained(d, max_shard_size="100KB")
  return d


def test_round_trip_is_bit_identical_and_loads_in_transformers(hf_dir, tmp_path):
  from_hf.main(["--hf_dir", str(hf_dir), "--out", str(tmp_path / "ours")])
  to_hf.main(["--ckpt", str(tmp_path / "ours"), "--out", str(tmp_path / "back"),
              "--base_hf_dir", str(hf_dir), "--max_shard_gb", "0.0001"])
  a, b = _read_all(hf_dir), _read_all(tmp_path / "back")
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
  assert (tmp_path / "back" / "generation_config.json").exists()
  index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1

  orig = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir).eval()
  back = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
  batch = ref.make_batch([[(1, 8, 8)]], [[3, 4]], np.random.default_rng(0))
  want, _ = ref.hf_forward(orig, batch)
  got, _ = ref.hf_forward(back, batch)
  np.testing.assert_array_equal(got, want)


def test_rope_theta_override_reaches_exported_config(hf_dir, tmp_path):
  cfg, flat = from_hf.convert(hf_dir, rope_theta=4e6)
  to_hf.export(cfg, flat, tmp_path / "out")
  model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out")
  assert model.config.text_config.rope_parameters["rope_theta"] == 4e6


def _corrupt(src, dst, edit):
  dst.mkdir()
  (dst / "config.json").write_text((src / "config.json").read_text())
  tensors = _read_all(src)
  edit(tensors)
  save_file(tensors, str(dst / "model.safetensors"))


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "missing tensor model.layers.1.mlp.up_proj.weight"),
    (lambda t: t.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)}), "unexpected tensor model.layers.0.extra.weight"),
    (lambda t: t.update({"visual.blocks.0.attn.qkv.weight": np.zeros((5, 5), np.float32)}), "visual.blocks.0.attn.qkv.weight has shape (5, 5)"),
    (lambda t: t.update({"model.norm.weight": np.zeros(64, np.int32)}), "model.norm.weight has dtype int32"),
])
def test_malformed_checkpoints_name_the_tensor(hf_dir, tmp_path, edit, message):
  _corrupt(hf_dir, tmp_path / "bad", edit)
  with pytest.raises(hf_io.CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
    from_hf.convert(tmp_path / "bad")


def test_export_rejects_wrong_parameter_shape(hf_dir, tmp_path):
  cfg, flat = from_hf.convert(hf_dir)
  flat["language_model.norm.weight"] = np.zeros(3, np.float32)
  with pytest.raises(hf_io.CheckpointError, match="language_model.norm.weight"):
    to_hf.export(cfg, flat, tmp_path / "out")


def test_missing_folder_and_index_shards_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    from_hf.convert(tmp_path)
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "x.safetensors"}}))
  with pytest.raises(FileNotFoundError, match="x.safetensors"):
    hf_io.safetensor_files(tmp_path)
