"""OCR-transcription ablation: full-document OCR only (every page transcribed), 5B tokens.

  sbatch --nodes=8 launch/slurm_gpu.sbatch configs/ablations/ocr_full.py /ckpt/abl_ocr_full \\
      --config.init_checkpoint=/ckpt/qwen2_5_vl_7b_converted --config.data.root=/data/shards

(on every node: `python -m mmprolong_jax.train --config configs/ablations/ocr_full.py
--workdir /ckpt/abl_ocr_full` with the same overrides). Shard set `ocr_full`
(`data_tools.assemble --assemble_tasks ocr_full`). Data: 97,336 samples, 39.6 pages and 96.4K
tokens on average, 9.38B tokens in all (Table 10c).

The transcription is the target, so a batch has far more loss positions than VQA: about 1/8 of
the tokens are budgeted here. If the trainer stops on `train.max_loss_tokens`, raise it (the set's
stats.json has target_tokens / rows).

Reported (MMLB-D / LD-URL / SLIDE):
  Table 1   64K 23.67 / 11.06 / 59.00, avg 31.24;  128K 23.97 / 20.36 / 61.00, avg 35.11;
            overall 33.17 (-17.4 vs Qwen2.5-VL-7B). After a 5B-token SFT stage
            (ocr_sft_stage2.py:full): 53.84.
"""
from configs import final


def get_config():
  c = final.set_mixture(final.get_config(), {"ocr_full": 1.0})
  c.train.max_loss_tokens = final.loss_positions(c.data.global_batch_tokens, 1 / 8)
  return c
