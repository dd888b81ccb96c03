"""Training configs and launch scripts: every config loads the way the trainer loads it, final.py
is the study's Table 6, the ablations are the study's grids as small deltas on it, and the
launch scripts parse."""
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from configs import final
from mmprolong_jax.data import schema
from mmprolong_jax.data.mixture import normalized_weights
from mmprolong_jax.data.sources import steps_from_budget
from mmprolong_jax.model import config as config_lib
from mmprolong_jax.model.vision_layout import VisionGeometry

ROOT = Path(__file__).parents[1]
# config_flags loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
CONFIG_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.py")
                      if p.name != "__init__.py")


def _module(path):
  return importlib.import_module(path[:-3].replace("/", "."))


def _specs():
  """Every runnable `path[:arg]`: each parametrised file once per entry of its ARGS."""
  out = []
  for path in CONFIG_FILES:
    args = getattr(_module(path), "ARGS", None)
    out += [f"{path}:{a}" for a in args] if args else [path]
  return out


SPECS = _specs()


def load(spec, *overrides):
  """Parses `--config=spec` exactly as mmprolong_jax.train does (config_flags, `:arg` suffix,
  locked config, `--config.key=value` overrides), relative to the repository root."""
  argv = ["prog", f"--config={spec}", *overrides]
  fv = flags.FlagValues()
  # Override flags are discovered from argv when the config flag is defined.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    fv(argv)
    return fv.config
  finally:
    os.chdir(cwd)


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def changed(config, reference):
  """Dotted keys whose values differ (or exist on one side only), mixture/shards as one key."""
  a, b = _flat(config.to_dict()), _flat(reference.to_dict())
  keys = {k for k in a.keys() | b.keys() if a.get(k, "<missing>") != b.get(k, "<missing>")}
  return {k.rsplit(".", 1)[0] if k.startswith(("data.mixture.", "data.shards.")) else k
          for k in keys}


def recipe_specs():
  """Configs built on final.py (they have data.root and real shard globs)."""
  return [s for s in SPECS if "root" in load(s).data]


@pytest.mark.parametrize("spec", SPECS)
def test_config_loads(spec):
  c = load(spec)
  for section in ("model", "attention", "mesh", "data", "optim", "train"):
    assert section in c, (spec, section)
  assert c.data.global_batch_tokens % c.data.max_len == 0
  VisionGeometry.from_config(c.data).check(config_lib.qwen2_5_vl_7b().vision, c.mesh.sequence)
  assert 4 * c.data.max_len <= c.data.num_patches <= 5 * c.data.max_len or spec.startswith(
      ("configs/tiny_cpu", "configs/demo"))   # 4 patches per token + window padding
  assert steps_from_budget(c.train.token_budget, c.data.global_batch_tokens) >= 1


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if p != "configs/base.py"])
def test_docstring_says_how_to_run_and_what_was_reported(path):
  doc = _module(path).__doc__ or ""
  assert path in doc, f"{path}: docstring has no command naming the file"
  if path.startswith(("configs/final", "configs/ablations/", "configs/qwen")):
    assert "Reported" in doc, f"{path}: docstring lacks the study's numbers"
    assert "python -m mmprolong_jax.train --config" in " ".join(doc.split())


def test_final_is_table6():
  c = load("configs/final.py")
  assert c.init_checkpoint == final.INIT_CHECKPOINT          # a converted Qwen2.5-VL-7B-Instruct
  assert c.model.preset == "qwen2_5_vl_7b"
  assert c.model.rope_theta == 4e6
  assert c.model.max_position_embeddings == 131072
  assert c.data.max_len == 131072
  assert c.data.global_batch_tokens == 4_194_304 == 32 * 131072
  assert dict(c.data.mixture) == {"extract_single": 0.4, "extract_multi": 0.4, "reasoning": 0.2}
  assert "short" not in c.data.mixture                       # pure long data
  assert c.data.num_patches >= 4 * c.data.max_len   # every image token's patches, windows padded
  assert c.data.image_rows * 2508 >= c.data.max_len  # one image row per 144-DPI page at least
  assert c.optim.peak_lr == 1e-5 and c.optim.final_lr == 1e-6
  assert c.optim.warmup_fraction == 0.1
  assert c.optim.weight_decay == 0.1
  assert (c.optim.b1, c.optim.b2) == (0.9, 0.95)
  assert c.train.token_budget == 5 * 2**30
  assert steps_from_budget(c.train.token_budget, c.data.global_batch_tokens) == 1280
  assert (c.attention.backend, c.mesh.sequence, c.mesh.fsdp, c.mesh.data) == ("ulysses", 2, -1, 1)


def test_final_mesh_is_the_studys_per_node_layout():
  from mmprolong_jax.parallel.mesh import mesh_shape
  c = load("configs/final.py")
  assert mesh_shape(c.mesh, 8) == (1, 4, 2, 1)               # SP 2 x FSDP 4 on one node
  assert mesh_shape(c.mesh, 64) == (1, 32, 2, 1)             # x 8 nodes: one row per group
  rows = c.data.global_batch_tokens // c.data.max_len
  assert rows == 32 == math.prod(mesh_shape(c.mesh, 64)[:2])


def test_final_lr_schedule():
  from mmprolong_jax.optim import lr_schedule
  c = load("configs/final.py")
  sched = lr_schedule(c.optim, 1280)
  assert float(sched(0)) == 0.0
  assert float(sched(128)) == pytest.approx(1e-5)            # 10% warmup
  assert float(sched(1280)) == pytest.approx(1e-6)


def test_placeholders_fail_clearly():
  from mmprolong_jax import setup
  with pytest.raises(FileNotFoundError, match="/path/to/qwen2_5_vl_7b_converted"):
    setup.model_config(final.get_config())


def test_mixtures_are_well_formed():
  for spec in recipe_specs():
    c = load(spec)
    mixture, shards = dict(c.data.mixture), dict(c.data.shards)
    assert sum(mixture.values()) == pytest.approx(1.0), spec
    assert set(mixture) <= set(schema.TASKS), spec
    weights = normalized_weights(mixture, shards)           # what the loader will use
    assert sum(weights.values()) == pytest.approx(1.0)
    for name in mixture:
      assert shards[name] == schema.shard_glob(c.data.root, name), (spec, name)


def test_data_root_override_moves_every_glob():
  c = load("configs/final_short40.py", "--config.data.root=/data/x",
           "--config.init_checkpoint=/ckpt/q")
  assert c.init_checkpoint == "/ckpt/q"
  assert dict(c.data.shards) == {n: schema.shard_glob("/data/x", n) for n in c.data.mixture}


def _positive(c):
  return {k: v for k, v in c.data.mixture.items() if v > 0}


def test_extract_reason_grid():
  for arg in ("0_10", "2_8", "4_6", "6_4", "8_2", "10_0"):
    e, r = (int(x) / 10 for x in arg.split("_"))
    c = load(f"configs/ablations/extract_reason.py:{arg}")
    assert c.data.mixture.extract_single == pytest.approx(e / 2)
    assert c.data.mixture.extract_multi == pytest.approx(e / 2)
    assert c.data.mixture.reasoning == pytest.approx(r)
    assert changed(c, final.get_config()) <= {"data.mixture"}
  assert changed(load("configs/ablations/extract_reason.py:8:2"), final.get_config()) == set()
  assert _positive(load("configs/ablations/extract_reason.py:0_10")) == {"reasoning": 1.0}


def test_short_ratio_grid():
  for pct in (20, 40, 60, 80):
    c = load(f"configs/ablations/short_ratio.py:{pct}")
    assert c.data.mixture.short == pytest.approx(pct / 100)
    long = {k: v / (1 - pct / 100) for k, v in c.data.mixture.items() if k != "short"}
    assert long == pytest.approx(final.MIXTURE)
    assert c.train.max_loss_tokens > 8192
    assert changed(c, final.get_config()) <= {"data.mixture", "data.shards",
                                              "train.max_loss_tokens"}
  assert changed(load("configs/ablations/short_ratio.py:0"), final.get_config()) == set()
  assert changed(load("configs/ablations/short_ratio.py:40"),
                 load("configs/final_short40.py")) == set()


def test_single_tasks_rope_bases_and_lengths():
  ref = final.get_config()
  for task in ("extract_single", "extract_multi", "reasoning"):
    single = load(f"configs/ablations/{task}.py")
    assert dict(single.data.mixture) == {task: 1.0}
    assert changed(single, ref) == {"data.mixture", "data.shards"}
    for base in ("2e6", "4e6", "8e6"):
      c = load(f"configs/ablations/rope_base.py:{task}_{base}")
      assert c.model.rope_theta == float(base)
      assert changed(c, single) <= {"model.rope_theta"}
    assert changed(load(f"configs/ablations/rope_base.py:{task}_4e6"), single) == set()
    lb = load(f"configs/ablations/long_biased.py:{task}")
    assert changed(lb, single) == {"data.root", "data.shards"}


def test_ocr_and_sft_stages():
  ref = final.get_config()
  for kind in ("full", "needle"):
    ocr = load(f"configs/ablations/ocr_{kind}.py")
    assert dict(ocr.data.mixture) == {f"ocr_{kind}": 1.0}
    assert ocr.train.max_loss_tokens > ref.train.max_loss_tokens   # transcriptions are long
    assert changed(ocr, ref) == {"data.mixture", "data.shards", "train.max_loss_tokens"}
    assert changed(load(f"configs/ablations/ocr_sft_stage1.py:{kind}"), ocr) == set()
    sft = load(f"configs/ablations/ocr_sft_stage2.py:{kind}",
               f"--config.init_checkpoint=/ckpt/ocr_{kind}_stage1")
    assert sft.init_checkpoint == f"/ckpt/ocr_{kind}_stage1"
    assert dict(sft.data.mixture) == {"short": 1.0}
    assert sft.data.global_batch_tokens == ref.data.global_batch_tokens   # 4M tokens per step
    assert sft.optim.to_dict() == ref.optim.to_dict()
    assert sft.train.token_budget == ref.train.token_budget
    assert sft.model.rope_theta == 4e6


def test_backbones():
  ref = final.get_config()
  assert changed(load("configs/qwen2_5_vl_3b.py"), ref) == {"init_checkpoint", "model.preset"}
  assert changed(load("configs/qwen2_5_vl_32b.py"), ref) == {
      "init_checkpoint", "model.preset", "mesh.sequence"}
  tpu = load("configs/final_tpu.py")
  assert changed(tpu, ref) == {"attention.local_backend", "attention.vision_backend"}
  assert "cudnn" not in (tpu.attention.local_backend, tpu.attention.vision_backend)


def test_train_cli_loads_nested_configs_from_the_repo_root():
  """`python -m mmprolong_jax.train --config configs/ablations/x.py:arg` imports `configs` from
  the working directory (sys.path[0] = ''), with nothing else on the path."""
  code = ("from absl import flags; from ml_collections import config_flags; "
          "config_flags.DEFINE_config_file('config'); "
          "flags.FLAGS(['p', '--config=configs/ablations/rope_base.py:reasoning_8e6']); "
          "print(flags.FLAGS.config.model.rope_theta)")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "8000000.0"


@pytest.mark.parametrize("script", ["launch/slurm_gpu.sbatch", "launch/tpu_slice.sh"])
def test_launch_script_syntax(script):
  out = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
