"""Single-device attention: the kernels every device can run on its own arrays."""
from mmprolong_jax.attention import layout
from mmprolong_jax.attention.config import AttentionConfig
from mmprolong_jax.attention.cudnn import cudnn_attention
from mmprolong_jax.attention.reference import reference_attention
from mmprolong_jax.attention.ring import BlockwiseStep, ring_core
from mmprolong_jax.attention.splash import splash_attention


def _by_storage_index(kernel, q, k, v, seg, cfg: AttentionConfig, sp: int):
  """Runs a kernel that masks by storage index (causality = index order) on a stream
  stored in cfg.layout, un-permuting a zigzag stream around it."""
  if cfg.layout == "natural":
    return kernel(q, k, v, seg)
  perm, inverse = layout.zigzag_permutation(q.shape[1], sp)
  q, k, v, seg = (layout.take_tokens(x, inverse) for x in (q, k, v, seg))
  return layout.take_tokens(kernel(q, k, v, seg), perm)


def local_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT, causal: bool,
                    cfg: AttentionConfig, backend: str, sp: int):
  """`backend` is one of LOCAL_BACKENDS; `sp` is the zigzag degree of cfg.layout."""
  if backend == "reference":
    return reference_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, seg_BxT, pos_BxT, pos_BxT,
                               causal)
  if backend == "blockwise":
    return ring_core(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, pos_BxT,
                     BlockwiseStep(causal, cfg.block_q, cfg.block_kv), None, 1)
  if backend == "cudnn":
    def kernel(q, k, v, seg):
      return cudnn_attention(q, k, v, seg, causal, cfg.max_segments)
  elif backend == "splash":
    def kernel(q, k, v, seg):
      return splash_attention(q, k, v, seg, causal, block_q=cfg.block_q, block_kv=cfg.block_kv,
                              interpret=cfg.splash_interpret)
  else:
    raise ValueError(f"Not a single-device backend: {backend!r}.")
  return _by_storage_index(kernel, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, seg_BxT, cfg, sp)
