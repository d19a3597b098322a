"""Multi-host start-up: jax.distributed.initialize from flags, or auto-detected on a cluster."""

import os
from typing import Optional

import jax

# Environment variables set by launchers that jax.distributed.initialize() auto-detects.
_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins the job's processes.

  With explicit arguments they go to jax.distributed.initialize (CPU processes use gloo
  collectives). With none, it initializes only on a detected cluster (Slurm, Open MPI, a TPU pod
  slice; the cluster supplies the values) and otherwise runs single-process.
  """
  explicit = coordinator_address is not None or num_processes is not None
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ValueError("--coordinator_address, --num_processes and --process_id go together")
    if num_processes > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif any(os.environ.get(name) for name in _CLUSTER_ENV) and _multi_task_cluster():
    jax.distributed.initialize()


def _multi_task_cluster() -> bool:
  """False for a single-task Slurm/MPI allocation (nothing to join)."""
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if os.environ.get(name) is not None:
      return int(os.environ[name]) > 1
  return True
