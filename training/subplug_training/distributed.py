"""The processes of one training run.

``subplug train`` runs as one process, or as several started by a launcher
(``torchrun``, ``accelerate launch``: one per GPU, or several sharing a CPU) that train
one adapter together (data parallel, with the Trainer's DistributedDataParallel). The
main process (rank 0) does what must happen once: it prints, checks the options and the
data, writes the run folder's shared files (``run.json``, ``data-report.json``,
``adapter/``), removes checkpoints and installs the adapter. The others wait for it where
it works alone and take its result (:meth:`Processes.share`); when it fails they stop
with its exit code and print nothing, as it has already said why.

The processes find each other through the launcher's environment (``WORLD_SIZE``,
``RANK``, ``MASTER_ADDR``… or MPI's), through accelerate's ``PartialState``: the same
state the Trainer then uses, with ``gloo`` on the CPU and ``nccl`` on CUDA GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from subplug.errors import SubplugError

T = TypeVar("T")

#: Where launchers put the number of processes and this process's rank (torchrun and
#: accelerate: the first; MPI implementations: the others), as accelerate reads them.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")

#: How the documentation says to start several processes (the hint of launch errors).
LAUNCH_HINT = (
    "Start N processes with torchrun --nproc_per_node N -m subplug train …, or accelerate "
    "launch --multi_gpu --num_processes N -m subplug train … (add --device cpu to both for "
    "CPU processes); docs/training.md, 'Several GPUs'."
)


class MainProcessFailed(Exception):
    """Raised in the other processes when the main one stopped with an error it has
    printed; ``exit_code`` is its exit code, for them to exit with, silently."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"the main process stopped (exit code {exit_code})")
        self.exit_code = exit_code


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return default


def launched_processes() -> int:
    """How many processes the launcher that started this one started (1 without one)."""
    return max(1, _env_int(WORLD_SIZE_VARIABLES, 1))


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 without one)."""
    return _env_int(RANK_VARIABLES, 0)


def check_launch(environ: dict[str, str] | None = None) -> None:
    """Refuse a launch that asked for several processes but started this one alone.

    ``accelerate launch --cpu --num_processes N`` uses accelerate's simple launcher,
    which starts one process (with ``MASTER_ADDR`` set for the group it never forms):
    several CPU processes come only through MPI (``--mpirun_hostfile``). Training on in
    that one process would take N times as long as asked, silently."""
    env = os.environ if environ is None else environ
    use_cpu = env.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    alone = not any(env.get(name, "").strip() for name in (*WORLD_SIZE_VARIABLES, "LOCAL_RANK"))
    if use_cpu and alone and env.get("MASTER_ADDR"):
        raise SubplugError(
            "launch-one-process",
            "accelerate launch --cpu started only this process, not the several asked "
            "for: its --cpu launcher starts several only through MPI (--mpirun_hostfile).",
            LAUNCH_HINT,
        )


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of a run."""

    rank: int = 0
    """0 for the main process."""
    local_rank: int = 0
    """Rank on this machine (its GPU number under torchrun)."""
    count: int = 1
    """Processes in the run, on all machines."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """``"2 processes"`` or ``"1 process"``."""
        return f"{self.count} process" + ("" if self.count == 1 else "es")

    def share(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the main process only and hand its result to every process.

        The others wait meanwhile. When ``work`` fails in the main process the failure
        is raised there as it is (and printed by the command); the others raise
        :class:`MainProcessFailed` with its exit code (1 for a crash)."""
        if self.count == 1:
            return work()
        if not self.is_main:
            outcome, value = _broadcast(None)
            if outcome == "ok":
                return value  # type: ignore[no-any-return]
            raise MainProcessFailed(int(value))
        try:
            result = work()
        except SubplugError as error:
            _broadcast(("failed", error.exit_code))
            raise
        except KeyboardInterrupt:
            _broadcast(("failed", 130))
            raise
        except BaseException:
            _broadcast(("failed", 1))
            raise
        _broadcast(("ok", result))
        return result

    def barrier(self) -> None:
        """Wait until every process has come here."""
        if self.count > 1:
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool, device: Any) -> bool:
        """True in every process when ``flag`` is true in at least one (a collective:
        every process must call it at the same point; ``device`` holds the tensor:
        the CPU for gloo, this process's GPU for nccl)."""
        if self.count == 1:
            return flag
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def close(self) -> None:
        """Leave the process group (after the last collective of the run)."""
        if self.count > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def start(device: str, *, timeout_s: float) -> Processes:
    """Join the other processes of this run (as the Trainer would, through accelerate's
    ``PartialState``) or, without a launcher, return the single process.

    ``timeout_s`` bounds every wait of one process for the others, such as the data
    check the main process does alone (``train.ddp_timeout``, 1800 s by default)."""
    check_launch()
    if launched_processes() == 1:
        return Processes()
    from accelerate import PartialState

    kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)}
    if device == "cpu":
        kwargs["cpu"] = True
    state = PartialState(**kwargs)
    return Processes(
        rank=int(state.process_index),
        local_rank=int(state.local_process_index),
        count=int(state.num_processes),
    )


def quiet_replica() -> None:
    """In a process other than the main one: no library warnings or log lines (the main
    process prints the same ones once)."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.simplefilter("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
