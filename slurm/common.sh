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
echo "job ${SLURM_JOB_ID:-local} on $(hostname): profile $PROFILE, run folder $RUN_DIR, python $PY"
