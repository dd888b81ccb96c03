"""Real-size configs built abstractly (no weights) against transformers on the meta device."""
import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmprolong_jax import params as params_lib
from mmprolong_jax.convert.mapping import tensor_specs
from mmprolong_jax.model import config as config_lib


@pytest.mark.parametrize("make", [config_lib.qwen2_5_vl_7b, config_lib.qwen2_5_vl_3b], ids=["7b", "3b"])
def test_every_parameter_shape_matches_transformers(make):
  cfg = make()
  with torch.device("meta"):
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg.to_hf_dict()))
  from mmprolong_jax.convert.mapping import canonical_hf_name
  hf_shapes = {canonical_hf_name(k): tuple(v.shape) for k, v in hf.state_dict().items()}
  if cfg.text.tie_word_embeddings:
    hf_shapes.pop("lm_head.weight")
  specs = tensor_specs(cfg)
  assert {s.hf_name: s.hf_shape for s in specs} == hf_shapes

  ours = params_lib.flat_params(params_lib.abstract_model(cfg))
  assert {s.path: s.our_shape for s in specs} == {k: tuple(v.shape) for k, v in ours.items()}
  n_ours = sum(int(np.prod(v.shape)) for v in ours.values())
  n_hf = sum(p.numel() for n, p in hf.named_parameters())
  assert n_ours == n_hf
  if make is config_lib.qwen2_5_vl_7b:
    assert 8.2e9 < n_ours < 8.4e9  # Qwen2.5-VL-7B is published as 8.29B parameters
