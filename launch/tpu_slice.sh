#!/bin/bash
# Cloud TPU slice (e.g. v5p-128: 64 chips on 16 hosts) driven with `gcloud compute tpus tpu-vm
# ssh --worker=all`: every host runs the same trainer command; jax.distributed ties them together.
#
#   export TPU=mmprolong ZONE=us-east5-a [PROJECT=my-project] [ACCEL=v5p-128]
#   launch/tpu_slice.sh create                  # gcloud compute tpus tpu-vm create
#   launch/tpu_slice.sh setup                   # copy this checkout to every host, pip install
#   launch/tpu_slice.sh train CONFIG WORKDIR [--config.key=value ...]
#   launch/tpu_slice.sh logs                    # follow host 0's log
#   launch/tpu_slice.sh stop                    # SIGTERM the trainers: they save, then exit
#   launch/tpu_slice.sh delete
#   launch/tpu_slice.sh xpk CONFIG WORKDIR ...  # print the equivalent xpk (GKE) workload command
#
#   launch/tpu_slice.sh train configs/final_tpu.py /mnt/ckpt/mmprolong \
#       --config.init_checkpoint=/mnt/ckpt/qwen2_5_vl_7b_converted --config.data.root=/mnt/data/shards
#
# WORKDIR, the converted checkpoint and the shards must be paths that every host sees (a
# Filestore/NFS mount or gcsfuse, mounted at the same place on all workers): checkpoints are
# written by all hosts together and each host reads its own rows of every batch.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE}"
ACCEL=${ACCEL:-v5p-128}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5}       # the v5p TPU VM image
REMOTE_DIR=${REMOTE_DIR:-mmprolong_jax}  # relative to each host's home directory
GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && WHERE+=(--project="$PROJECT")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Overlap FSDP all-gathers and reduce-scatters with compute (libtpu flags, not XLA_FLAGS).
LIBTPU_FLAGS=${LIBTPU_FLAGS:-"--xla_tpu_enable_async_collective_fusion=true \
--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true \
--xla_tpu_overlap_compute_collective_tc=true \
--xla_enable_async_all_gather=true"}

on_all() {  # run a shell command on every host of the slice
  "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all --command="$1"
}

quote_args() {  # the arguments as one shell-safe string
  local out="" a
  for a in "$@"; do out+=" $(printf '%q' "$a")"; done
  echo "${out# }"
}

cmd=${1:-}
shift || true
case "$cmd" in
  create)
    "${GCLOUD[@]}" create "$TPU" "${WHERE[@]}" --accelerator-type="$ACCEL" --version="$RUNTIME"
    ;;
  setup)
    archive=$(mktemp --suffix=.tar.gz)
    tar -C "$REPO" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
        -czf "$archive" .
    "${GCLOUD[@]}" scp "$archive" "$TPU":mmprolong_src.tar.gz "${WHERE[@]}" --worker=all
    rm -f "$archive"
    on_all "set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/mmprolong_src.tar.gz -C ~/$REMOTE_DIR \
      && cd ~/$REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate \
      && pip install -q -U pip && pip install -q -e . 'jax[tpu]'"
    ;;
  train)
    [[ $# -ge 2 ]] || { echo "usage: $0 train CONFIG WORKDIR [overrides]" >&2; exit 2; }
    # Host 0 coordinates; the trainer calls jax.distributed.initialize() when it sees
    # JAX_COORDINATOR_ADDRESS, and JAX reads process count and id from the TPU metadata.
    coord=$("${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}" --format='value(networkEndpoints[0].ipAddress)')
    train_cmd="python -m mmprolong_jax.train --config $(quote_args "$1") --workdir $(quote_args "$2")"
    shift 2
    train_cmd+=" $(quote_args "$@")"
    # Only the trainer is backgrounded, so train.pid is its pid (for `stop`).
    on_all "set -e; cd ~/$REMOTE_DIR; . .venv/bin/activate; \
      export JAX_COORDINATOR_ADDRESS=$coord:8476 LIBTPU_INIT_ARGS='$LIBTPU_FLAGS'; \
      nohup $train_cmd > ~/train.log 2>&1 < /dev/null & echo \$! > ~/train.pid; \
      echo \"\$(hostname): pid \$(cat ~/train.pid)\""
    ;;
  logs)
    "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=0 --command="tail -n 200 -F ~/train.log"
    ;;
  stop)
    on_all 'test -f ~/train.pid && kill -TERM "$(cat ~/train.pid)" || true'
    ;;
  delete)
    "${GCLOUD[@]}" delete "$TPU" "${WHERE[@]}" --quiet
    ;;
  xpk)
    # GKE alternative: xpk runs the same command in a container on every host; there the
    # trainer sees TPU_WORKER_HOSTNAMES and initializes itself. IMAGE: this checkout installed
    # with `pip install -e . 'jax[tpu]'`, working directory the repository root.
    [[ $# -ge 2 ]] || { echo "usage: $0 xpk CONFIG WORKDIR [overrides]" >&2; exit 2; }
    train_cmd="python -m mmprolong_jax.train --config $(quote_args "$1") --workdir $(quote_args "$2")"
    shift 2
    train_cmd+=" $(quote_args "$@")"
    echo "xpk workload create --cluster \${CLUSTER:?} --workload mmprolong-\$(date +%m%d-%H%M) \\"
    echo "  --tpu-type=$ACCEL --num-slices=1 --docker-image=\${IMAGE:?} \\"
    echo "  --command \"export LIBTPU_INIT_ARGS='$LIBTPU_FLAGS'; $train_cmd\""
    ;;
  *)
    sed -n '2,20p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
