"""Full model under sequence parallelism (ring, Ulysses) equals the single-device model:
loss and gradients on a packed multi-image row."""
import jax
import numpy as np
import pytest
from flax import nnx

from mmprolong_jax import params as params_lib, setup
from mmprolong_jax.attention import AttentionConfig
from mmprolong_jax.data.synthetic import synthetic_batch
from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.qwen2_5_vl import Qwen2_5_VL
from mmprolong_jax.parallel.mesh import make_mesh
from tests.model_testlib import loss_and_grads


@pytest.mark.parametrize("backend", ["ring", "ulysses"])
def test_sequence_parallel_model_matches_single_device(backend):
  cfg = config_lib.tiny()
  batch = synthetic_batch(0, 0, cfg, rows=2, max_len=256,
                          page_grid=(1, 8, 12), pages_per_segment=(2, 1), answer_len=8)
  ref_model = Qwen2_5_VL(cfg, nnx.Rngs(0))
  flat = jax.tree.map(np.asarray, params_lib.flat_params(ref_model))
  want_loss, want_grads = loss_and_grads(ref_model, {k: jax.numpy.asarray(v) for k, v in batch.items()})

  mesh = make_mesh({"data": 1, "fsdp": 2, "sequence": 4, "tensor": 1})
  attn = AttentionConfig(backend=backend, mesh=mesh, local_backend="blockwise", block_q=32,
                         block_kv=32, layout="zigzag" if backend == "ring" else "natural")
  vis = AttentionConfig(backend="blockwise", block_q=32, block_kv=32)
  model = params_lib.model_from_flat(cfg, flat, attn_cfg=attn, vision_attn_cfg=vis)
  # The SP run also spreads the vision tower: its images sit on 4 sequence shards.
  batch4 = synthetic_batch(0, 0, cfg, rows=2, max_len=256, page_grid=(1, 8, 12),
                           pages_per_segment=(2, 1), answer_len=8, vision_shards=4)
  assert batch4["window_segments"].shape[1] == 4
  np.testing.assert_array_equal(batch4["input_ids"], batch["input_ids"])
  sp_batch = setup.zigzag_batch(batch4, 4) if backend == "ring" else batch4
  with jax.set_mesh(mesh):
    got_loss, got_grads = loss_and_grads(model, {k: jax.numpy.asarray(v) for k, v in sp_batch.items()})
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want_grads), jax.tree.leaves(got_grads)):
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def _plain_take_rows(x, index, inverse):
  del inverse
  idx = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jax.numpy.take_along_axis(x, idx, axis=1, mode="fill", fill_value=0)


@pytest.mark.parametrize("vision_shards", [1, 2])
def test_take_rows_transpose_equals_autodiff_of_the_gather(monkeypatch, vision_shards):
  """The model gathers image rows, scatters them back and places merged features with
  layers.take_rows, whose backward gathers by the inverse index. Oracle: the same model with a
  plain gather, differentiated by JAX (a scatter-add)."""
  cfg = config_lib.tiny()
  batch = synthetic_batch(0, 0, cfg, rows=2, max_len=256, page_grid=(1, 8, 12),
                          pages_per_segment=(2, 1), answer_len=8, vision_shards=vision_shards)
  batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  model = Qwen2_5_VL(cfg, nnx.Rngs(1))
  got_loss, got_grads = loss_and_grads(model, batch)
  from mmprolong_jax.model import layers
  monkeypatch.setattr(layers, "take_rows", _plain_take_rows)
  want_loss, want_grads = loss_and_grads(model, batch)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  vision_leaves = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want_grads), jax.tree.leaves(got_grads)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8, err_msg=jax.tree_util.keystr(path))
    vision_leaves += "visual" in jax.tree_util.keystr(path) and bool(np.any(np.asarray(a) != 0))
  assert vision_leaves > 10  # the vision tower's gradients are nonzero, so they were compared
