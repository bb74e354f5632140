# Sourced by the sbatch scripts: repository root, logs folder, site modules, the Python to use.
#   MODULES="python/3.11 cuda/12.4"  site modules to load first (optional)
#   PY=/path/to/python               default: .venv/bin/python, else python on PATH
#   PROFILE=default|cluster          parameter folder papermill_params/$PROFILE (default: default)
cd "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/..}"
mkdir -p logs/slurm runs
if [ -n "${MODULES:-}" ]; then module load $MODULES; fi
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
PROFILE=${PROFILE:-default}
RUN_DIR=${RUN_DIR:-runs/${SLURM_JOB_NAME:-job}-${SLURM_JOB_ID:-local}}
# torchrun forwards these to the ranks; the trainer checkpoints on SIGUSR1/SIGTERM and exits cleanly.
# The grace period must cover one training step plus writing the checkpoint.
TORCHRUN_SIGNALS=(--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout="${SHUTDOWN_TIMEOUT:-100}")
echo "job ${SLURM_JOB_ID:-local} on $(hostname): profile $PROFILE, run folder $RUN_DIR, python $PY${CUDA_VISIBLE_DEVICES:+, GPUs $CUDA_VISIBLE_DEVICES}"

# torchrun exits non-zero once SLURM's warning signal reaches it, even when the ranks checkpointed
# and stopped as asked. train_step runs the training step and ends the job by what the run recorded:
# preempted with a checkpoint -> exit 0 (state COMPLETED, so `--dependency=afterok` chains go on) and
# the way to continue it; any other failure keeps its exit code.
STARTED=$(mktemp)  # a train.json newer than this was written by this job
trap 'rm -f "$STARTED"' EXIT
# at the time limit SLURM sends SIGTERM to this shell too: wait for the ranks' checkpoint, do not die first
trap 'echo "batch script: SIGTERM; waiting for the training step to checkpoint"' TERM
train_step() {
  local status=0
  srun "$@" || status=$?
  if [ "$status" != 0 ] && [ "$RUN_DIR/train.json" -nt "$STARTED" ] && grep -q '"status": "preempted' "$RUN_DIR/train.json"; then
    echo "preempted; checkpoint $RUN_DIR/ckpt/$(cat "$RUN_DIR/ckpt/latest"). Continue it: submit the same job with"
    echo "RUN_DIR=$RUN_DIR and the arguments plus --resume $RUN_DIR"
    status=0
  fi
  return "$status"
}
