"""One attention interface for the LLM and the vision tower, several backends.

    from mmprolong_jax.attention import attention, AttentionConfig
    out_BxTxHxD = attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, *,
                            segment_ids_BxT,          # int32; 0 = padding, equal id = same segment
                            positions_BxT=None,       # int32 original token index; default below
                            causal: bool,
                            cfg: AttentionConfig)

Contract (every backend, checked against 'reference' in tests/attention):
- GQA: H query heads, K kv heads, H % K == 0; query head h uses kv head h // (H // K).
  Scale 1/sqrt(D). Output dtype = q's dtype.
- Packed rows: a query attends to a key only when both have the same non-zero segment
  id. Padding (id 0) attends nowhere and is attended by nothing: padded query outputs
  are exactly 0 and padded q/k/v get zero gradients.
- causal=True additionally requires positions_BxT[key] <= positions_BxT[query]; the
  stream may be stored in any order (e.g. zigzag). Default positions: arange(T) for
  cfg.layout='natural', the zigzag permutation itself for 'zigzag'.
- Called inside jax.jit on global (logical) arrays. 'ring' and 'ulysses' shard_map over
  cfg.mesh (or the mesh set with jax.set_mesh): batch over ('data', 'fsdp'), tokens over
  'sequence', heads over 'tensor' when it is larger than 1 (cfg.shard_heads).
- Non-causal use (the vision tower: 16 heads, D=80, segment ids = window or image ids)
  works with every backend.

Backends (AttentionConfig.backend):
- 'reference': jnp with an explicit [B, T, T] mask. The oracle; small sizes only.
- 'blockwise': tiled flash attention in jnp (custom_vjp, fp32 statistics), skipping
  tiles the mask empties. Any platform; it is also ring's per-step kernel.
- 'cudnn': cuDNN fused flash attention through its ragged-offset (packed) path: each
  contiguous segment runs as its own sequence, no mask is ever built and cross-segment
  tiles are never computed. GPU (Hopper+) only. Needs segments contiguous in natural
  order and at most cfg.max_segments per row (see cudnn.py for why this route).
- 'splash': TPU splash attention with segment ids (Pallas; cfg.splash_interpret runs
  it in interpret mode, which is how it is tested on CPU).
- 'ring': ring attention over 'sequence' (ring.py): K/V blocks circulate with their
  segment ids and positions, per-step (out, logsumexp) merged by log-sum-exp; the
  custom_vjp backward rings too (dK/dV travel with their block). Per-step kernel:
  cfg.local_backend='cudnn' -> one fused cuDNN ragged call per step (fused_step.py),
  and no ring at all when the sequence axis has size 1; otherwise 'blockwise'.
- 'ulysses': all-to-all sequence<->heads, cfg.local_backend on the full row, all-to-all
  back (ulysses.py). KV heads are repeated when the degree exceeds them; impossible
  degrees raise ValueError naming the numbers.

Layout: `zigzag_permutation(T, sp)` gives (perm, inverse). The model permutes tokens,
positions, segment ids and loss mask once with `perm` and sets
AttentionConfig(layout='zigzag'); ring is then load balanced, and every backend stays
correct (cudnn/splash un-permute locally, the others mask by positions).

Vision tower under sequence parallelism: whole images per shard, so vision attention
never communicates; `plan_vision_shards` / `assign_images_to_shards` balance shards by
patch count (README.md in this package).
"""
from mmprolong_jax.attention.api import attention
from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.layout import zigzag_permutation
from mmprolong_jax.attention.ulysses import kv_head_repeats
from mmprolong_jax.attention.vision_sp import assign_images_to_shards, plan_vision_shards

__all__ = ["attention", "AttentionConfig", "zigzag_permutation", "kv_head_repeats",
           "assign_images_to_shards", "plan_vision_shards"]
