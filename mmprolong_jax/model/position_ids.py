"""Jittable 3-D (temporal, height, width) mRoPE position ids for Qwen2.5-VL, still images only.

Equal to transformers' `Qwen2_5_VLModel.get_rope_index` for images. Within one sequence, walking left
to right with a running position `pos` (starting at 0):
  - a text token gets (pos, pos, pos), then pos += 1;
  - an image with grid (t, h, w) spans t*(h/m)*(w/m) consecutive `image_token_id` tokens (m = spatial
    merge size) in (t, h/m, w/m) raster order; the token at (ti, hi, wi) gets
    (pos + ti, pos + hi, pos + wi), and after the image pos += max(h, w) // m.

Contract (shapes are static, so this runs under `jax.jit`):
  - `image_grid_thw_Nx3` lists the images in order of appearance over the whole batch, row-major
    (row 0 left to right, then row 1, ...), like transformers. Rows may be padded with (0, 0, 0),
    which stands for "no image" and is skipped wherever it sits. The number of image tokens must
    equal the sum of t*(h/m)*(w/m) over the grid rows; otherwise the values are unspecified.
  - Image tokens are assigned to images by their rank among all image tokens, so two images may
    be adjacent with no text in between (transformers needs a separator there; the Qwen chat
    template always puts <|vision_start|>/<|vision_end|> around each image anyway).
  - `segment_ids_BxT`: 0 marks padding, other values mark packed sequences. Each sequence restarts
    at position 0 and is computed as if it were alone (its images are still taken from the shared
    grid list in order). A new sequence starts wherever the id differs from the id of the previous
    non-padding token in the row, so padding inside a sequence is skipped: `segment_ids =
    attention_mask` reproduces transformers' left/right padding behaviour. Padding gets position 0.
"""
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("image_token_id", "spatial_merge_size"))
def mrope_position_ids(input_ids_BxT, image_grid_thw_Nx3, *, segment_ids_BxT=None, image_token_id,
                       spatial_merge_size=2):
  """Returns positions_3xBxT int32 (temporal, height, width); see the module docstring."""
  batch, length = input_ids_BxT.shape
  if segment_ids_BxT is None:
    segment_ids_BxT = jnp.ones((batch, length), jnp.int32)
  valid_BxT = segment_ids_BxT != 0
  if image_grid_thw_Nx3 is None or image_grid_thw_Nx3.shape[0] == 0:
    image_grid_thw_Nx3 = jnp.zeros((1, 3), jnp.int32)

  # Sequence starts: a valid token whose id differs from the last valid token before it.
  pos_T = jnp.arange(length, dtype=jnp.int32)
  last_valid_BxT = jax.lax.cummax(jnp.where(valid_BxT, pos_T, -1), axis=1)
  prev_valid_BxT = jnp.pad(last_valid_BxT[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  prev_seg_BxT = jnp.take_along_axis(segment_ids_BxT, jnp.maximum(prev_valid_BxT, 0), axis=1)
  prev_seg_BxT = jnp.where(prev_valid_BxT >= 0, prev_seg_BxT, 0)
  starts_BxT = valid_BxT & (segment_ids_BxT != prev_seg_BxT)

  # Which image each image token belongs to, from its rank among all image tokens of the batch.
  grid_Nx3 = image_grid_thw_Nx3.astype(jnp.int32)
  grid_t_N = grid_Nx3[:, 0]
  grid_h_N = grid_Nx3[:, 1] // spatial_merge_size
  grid_w_N = grid_Nx3[:, 2] // spatial_merge_size
  size_N = grid_t_N * grid_h_N * grid_w_N
  end_N = jnp.cumsum(size_N)
  is_image_BxT = valid_BxT & (input_ids_BxT == image_token_id)
  rank_BxT = (jnp.cumsum(is_image_BxT.reshape(-1).astype(jnp.int32)) - 1).reshape(batch, length)
  image_BxT = jnp.minimum(jnp.searchsorted(end_N, rank_BxT, side="right"), end_N.shape[0] - 1)
  offset_BxT = rank_BxT - (end_N - size_N)[image_BxT]
  h_BxT = jnp.maximum(grid_h_N[image_BxT], 1)
  w_BxT = jnp.maximum(grid_w_N[image_BxT], 1)
  ti_BxT = offset_BxT // (h_BxT * w_BxT)
  hi_BxT = offset_BxT // w_BxT % h_BxT
  wi_BxT = offset_BxT % w_BxT

  # How far each token moves the running position once passed: text 1, an image max(h, w)/m
  # (charged on its last token so that all of its tokens share the same start).
  last_of_image_BxT = offset_BxT == size_N[image_BxT] - 1
  advance_BxT = jnp.where(last_of_image_BxT, jnp.maximum(grid_h_N, grid_w_N)[image_BxT], 0)
  step_BxT = jnp.where(is_image_BxT, advance_BxT, valid_BxT.astype(jnp.int32))
  before_BxT = jnp.cumsum(step_BxT, axis=1) - step_BxT
  # Steps are >= 0, so the running sum at the latest sequence start is a running max.
  base_BxT = jax.lax.cummax(jnp.where(starts_BxT, before_BxT, 0), axis=1)
  start_BxT = before_BxT - base_BxT

  thw_3xBxT = jnp.stack([ti_BxT, hi_BxT, wi_BxT]) * is_image_BxT
  return jnp.where(valid_BxT, start_BxT + thw_3xBxT, 0).astype(jnp.int32)


def rope_deltas(positions_3xBxT, segment_ids_BxT=None):
  """Per row max position + 1 - number of tokens, as transformers caches for generation; (B,) int32.

  Meaningful for rows holding one sequence (the generation case), not for packed rows.
  """
  if segment_ids_BxT is None:
    segment_ids_BxT = jnp.ones(positions_3xBxT.shape[1:], jnp.int32)
  valid_BxT = segment_ids_BxT != 0
  top_B = jnp.max(jnp.where(valid_BxT, positions_3xBxT, -1), axis=(0, 2))
  return (top_B + 1 - valid_BxT.sum(axis=1)).astype(jnp.int32)
