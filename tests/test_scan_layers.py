"""Layers run as a scan over stacked parameters (model.scan_layers) compute what the unrolled
loop computes: loss and gradients, with and without remat, on one device and on an FSDP x
sequence mesh; and MLPs in sequence chunks (model.mlp_chunks) compute the whole MLPs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmprolong_jax import params as params_lib
from mmprolong_jax.attention import AttentionConfig
from mmprolong_jax.data.synthetic import synthetic_batch
from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.layers import padded_hidden
from mmprolong_jax.model.qwen2_5_vl import Qwen2_5_VL
from mmprolong_jax.parallel.mesh import make_mesh
from mmprolong_jax.train_step import loss_and_metrics
from tests.model_testlib import loss_and_grads


def _cfg(**kw):
  # 3 decoder layers; vision runs W W F W W (two scans of 2 windowed blocks around a full one).
  cfg = config_lib.tiny(**kw).replace_text(num_layers=3)
  return cfg.replace_vision(depth=5, fullatt_block_indexes=(2,))


def _loss_and_grads(cfg, flat, batch, attn=None, vis=None):
  return loss_and_grads(params_lib.model_from_flat(cfg, flat, attn_cfg=attn, vision_attn_cfg=vis),
                        batch)


def _batch(cfg, shards=1):
  b = synthetic_batch(0, 0, cfg, rows=2, max_len=256, page_grid=(1, 8, 12),
                      pages_per_segment=(2, 1), answer_len=8, vision_shards=shards)
  return {k: jnp.asarray(v) for k, v in b.items()}


def _assert_same(got, want):
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want[1]), jax.tree.leaves(got[1])):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("policy", ["none", "full", "save_attention_out", "save_attention_qkv"])
def test_scan_equals_loop(policy):
  loop = _cfg(scan_layers=False, remat_policy=policy)
  flat = jax.tree.map(np.asarray, params_lib.flat_params(Qwen2_5_VL(loop, nnx.Rngs(0))))
  batch = _batch(loop)
  _assert_same(_loss_and_grads(loop.replace(scan_layers=True), flat, batch),
               _loss_and_grads(loop, flat, batch))


def _saved_residuals(capsys, **cfg_kw):
  """(cfg, batch, lines of jax's saved-residual listing) for the loss's gradient."""
  cfg = _cfg(**cfg_kw)
  graphdef, params = nnx.split(Qwen2_5_VL(cfg, nnx.Rngs(0)), nnx.Param)
  batch = _batch(cfg)
  jax.ad_checkpoint.print_saved_residuals(
      lambda p: loss_and_metrics(nnx.merge(graphdef, p), batch, 64, num_tasks=0)[0], params)
  return cfg, batch, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("scan", [False, True])
def test_save_attention_qkv_keeps_the_llm_qkv(capsys, scan):
  """The policy keeps every decoder layer's rotated q, k and v for the backward (and 'full'
  keeps none), so the QKV projection is not recomputed. A scan saves them stacked over layers."""
  cfg, batch, full = _saved_residuals(capsys, scan_layers=scan, remat_policy="full")
  _, _, qkv = _saved_residuals(capsys, scan_layers=scan, remat_policy="save_attention_qkv")
  (rows, length), t = batch["segment_ids"].shape, cfg.text
  lead = f"{t.num_layers}," if scan else ""
  for heads in (t.num_heads, t.num_kv_heads):
    shape = f"f32[{lead}{rows},{length},{heads},{t.head_dim}] "
    want = (1 if scan else t.num_layers) * (1 if heads == t.num_heads else 2)
    assert sum(line.startswith(shape) for line in qkv) == want, qkv
    assert not any(line.startswith(shape) for line in full), full


def test_vision_remat_policy_applies_to_the_vision_tower_only(capsys):
  """vision_remat_policy='save_attention_dots' keeps the vision blocks' matmul outputs (q/k/v,
  SwiGLU gate and up) for the backward; the LLM's residuals stay those of remat_policy."""
  cfg, batch, full = _saved_residuals(capsys, remat_policy="full")
  _, _, dots = _saved_residuals(capsys, remat_policy="full",
                                vision_remat_policy="save_attention_dots")
  shapes = lambda lines, dim: sorted(l.split()[0] for l in lines if f",{dim}," in l.split()[0])
  length, slots = batch["segment_ids"].shape[1], batch["patches"].shape[1]
  assert shapes(dots, length) == shapes(full, length)
  v = cfg.vision
  for width in (3 * v.hidden_size, padded_hidden(v.intermediate_size)):
    kept = [s for s in shapes(dots, slots) if s.endswith(f",{slots},{width}]")]
    assert kept and not [s for s in shapes(full, slots) if s.endswith(f",{slots},{width}]")]


@pytest.mark.parametrize("llm, vision", [("full", "save_attention_dots"), ("none", "full")])
def test_per_tower_policies_keep_the_numerics(llm, vision):
  cfg = _cfg(scan_layers=True, remat_policy=llm, vision_remat_policy=vision)
  flat = jax.tree.map(np.asarray, params_lib.flat_params(Qwen2_5_VL(cfg, nnx.Rngs(0))))
  batch = _batch(cfg)
  _assert_same(_loss_and_grads(cfg, flat, batch),
               _loss_and_grads(cfg.replace(remat_policy="none", vision_remat_policy=""), flat,
                               batch))


def test_mlp_chunks_equal_whole_mlps():
  whole = _cfg(scan_layers=True, remat_policy="full")
  flat = jax.tree.map(np.asarray, params_lib.flat_params(Qwen2_5_VL(whole, nnx.Rngs(0))))
  batch = _batch(whole)
  _assert_same(_loss_and_grads(whole.replace(mlp_chunks=4), flat, batch),
               _loss_and_grads(whole, flat, batch))


@pytest.mark.parametrize("shape", [dict(fsdp=2, sequence=4, tensor=1),
                                   dict(fsdp=2, sequence=2, tensor=2)])
def test_sharded_scan_equals_single_device_loop(shape):
  """Under FSDP x sequence (x tensor) sharding, scanned layers (weights stacked and kept
  sharded, the embedding gathered) give the unsharded loop's loss and gradients."""
  loop = _cfg(scan_layers=False, remat_policy="full")
  flat = jax.tree.map(np.asarray, params_lib.flat_params(Qwen2_5_VL(loop, nnx.Rngs(0))))
  want = _loss_and_grads(loop, flat, _batch(loop))
  mesh = make_mesh({"data": 1, **shape})
  attn = AttentionConfig(backend="ulysses", mesh=mesh, local_backend="blockwise", block_q=32,
                         block_kv=32)
  vis = AttentionConfig(backend="blockwise", block_q=32, block_kv=32)
  with jax.set_mesh(mesh):
    got = _loss_and_grads(loop.replace(scan_layers=True), flat, _batch(loop, shape["sequence"]),
                          attn, vis)
  _assert_same(got, want)


def test_sharding_rules_see_parameter_names():
  """The rules match on names such as 'mlp.gate_proj.kernel'; nnx's Variable `.value` key in a
  state's tree paths must not hide them (it once made every parameter 'replicated')."""
  from mmprolong_jax.model import layers
  from mmprolong_jax.model.text import DecoderLayer
  from mmprolong_jax.parallel import sharding
  state = nnx.state(DecoderLayer(config_lib.tiny(), nnx.Rngs(0)))
  specs = {layers._dotted(p): sharding.param_spec(layers._dotted(p), x.shape)
           for p, x in jax.tree_util.tree_leaves_with_path(state)}
  assert specs["mlp.gate_proj.kernel"] == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert specs["mlp.down_proj.kernel"] == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert specs["self_attn.q_proj.bias"] == jax.sharding.PartitionSpec("tensor")
