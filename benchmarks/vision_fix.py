"""Prototype measured by benchmarks/train_step.py: vision attention over windows/images laid out
as batch rows (cuDNN), swapped into the model through `VisionTower.attention_segments`."""
from __future__ import annotations

# ----------------------------------------------------------------------------------------------
# Prototype vision attention: windows / images as batch rows (monkeypatched into our tower)
# ----------------------------------------------------------------------------------------------
def segment_plan(seg_BxN, n_seg: int, seg_len: int):
  """Slot layout putting contiguous run r (id r+1) at rows [r*seg_len, r*seg_len + len)."""
  import jax
  import jax.numpy as jnp
  B, N = seg_BxN.shape
  idx = jnp.arange(N, dtype=jnp.int32)
  new = jnp.concatenate([jnp.ones((B, 1), bool), seg_BxN[:, 1:] != seg_BxN[:, :-1]], axis=1)
  run_start = jax.lax.cummax(jnp.where(new, idx[None], 0), axis=1)
  within = idx[None] - run_start
  valid = (seg_BxN > 0) & (seg_BxN <= n_seg) & (within < seg_len)
  dump = n_seg * seg_len
  slot = jnp.where(valid, (seg_BxN - 1) * seg_len + within, dump).astype(jnp.int32)
  b = jnp.arange(B)[:, None]
  src = jnp.full((B, dump + 1), N, jnp.int32).at[b, slot].set(idx[None])[:, :dump]
  lens = jnp.zeros((B, n_seg + 1), jnp.int32).at[b, jnp.where(valid, seg_BxN - 1, n_seg)].add(1)
  return {"slot": slot, "src": src, "lens": jnp.maximum(lens[:, :n_seg], 1)}


def batched_segment_attention(q, k, v, plan, n_seg, seg_len, impl):
  import jax
  import jax.numpy as jnp
  B, N, H, D = q.shape
  gather = jax.vmap(lambda x, i: x[i])

  def to_rows(x):
    xp = jnp.concatenate([x, jnp.zeros((B, 1) + x.shape[2:], x.dtype)], axis=1)
    return gather(xp, plan["src"]).reshape(B * n_seg, seg_len, *x.shape[2:])

  lens = plan["lens"].reshape(B * n_seg)
  o = jax.nn.dot_product_attention(to_rows(q), to_rows(k), to_rows(v), query_seq_lengths=lens,
                                   key_value_seq_lengths=lens, implementation=impl)
  o = o.reshape(B, n_seg * seg_len, H, D)
  o = jnp.concatenate([o, jnp.zeros((B, 1, H, D), o.dtype)], axis=1)
  return gather(o, plan["slot"])


def install_vision_fix(geom: dict):
  """geom: windows, win_len, images, img_len, impl (static, from the host batch)."""
  from mmprolong_jax.model import vision as V

  original_attention = V.attention

  def attention(q, k, v, *, segment_ids_BxT, causal, cfg, **kw):
    if isinstance(segment_ids_BxT, dict):  # a row plan: its shapes carry the static sizes
      p = segment_ids_BxT
      n_seg = p["lens"].shape[1]
      return batched_segment_attention(q, k, v, p, n_seg, p["src"].shape[1] // n_seg,
                                       geom["impl"])
    return original_attention(q, k, v, segment_ids_BxT=segment_ids_BxT, causal=causal, cfg=cfg, **kw)

  def attention_segments(self, layout):
    # Segment ids -> row plans; `attention` above recognizes the dicts.
    plans = (("window_segments", geom["windows"], geom["win_len"]),
             ("image_segments", geom["images"], geom["img_len"]))
    return tuple(segment_plan(layout[key], n, length) for key, n, length in plans)

  V.attention = attention
  V.VisionTower.attention_segments = attention_segments


def vision_geometry(batch, impl: str) -> dict:
  import numpy as np
  win = batch["window_segments"].reshape(-1, batch["window_segments"].shape[-1])[0]
  img = batch["image_segments"].reshape(-1, batch["image_segments"].shape[-1])[0]

  def longest(seg):
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    # runs are contiguous (checked): the longest run is the largest count
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]] & (seg > 0))
    assert len(starts) == len(ids), "segments are not contiguous runs"
    return int(ids.max()), int(counts.max())

  nw, lw = longest(win)
  ni, li = longest(img)
  assert lw <= 64, lw
  return {"windows": nw, "win_len": 64, "images": ni, "img_len": -(-li // 64) * 64, "impl": impl}


