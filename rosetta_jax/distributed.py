"""Multi-process start-up on JAX's own runtime (``jax.distributed``).

One call at the top of a binary, before any computation::

    info = distributed.initialize(coordinator="10.0.0.1:1234", num_processes=2,
                                  process_id=0)          # or from --coordinator etc.

decides how this process joins a run:

* flags given (``--coordinator``, ``--num_processes``, ``--process_id``): exactly
  those, all three or none;
* no flags, but a multi-process cluster environment JAX detects (a SLURM job step
  with several tasks, an Open MPI launch, a multi-host TPU slice that announces its
  workers in ``TPU_WORKER_HOSTNAMES``): ``jax.distributed.initialize()`` reads the
  details from there (on Cloud TPU VMs the TPU runtime itself also joins the hosts
  of a slice);
* neither: one process, nothing to start (the default; every binary runs as before).

Nothing may hang without saying why. The coordinator connection has a time-out
(``timeout_s``) after which the run ends with an error naming the address, this
process and the count; a peer that dies is noticed by the coordination service's
heartbeat (``heartbeat_s``) and ends the others; ``barrier`` waits for every
process with a time-out that names the barrier. ``deadline`` bounds any block of
collective work (XLA collectives on CPU and GPU have no time-out of their own): on
expiry it prints what was being waited for and ends the process.

On CPU backends the cross-process collectives use Gloo
(``jax_cpu_collectives_implementation``), set before the runtime starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time

import jax

EXIT_TIMEOUT = 75   # exit status of a run ended by ``deadline`` (EX_TEMPFAIL)


class DistributedError(RuntimeError):
  """The multi-process runtime could not start, or a process failed to arrive."""


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """Where this process stands: ``index`` of ``count``, how it was started."""
  index: int
  count: int
  source: str             # "single", "flags" or the detected environment's name
  coordinator: str | None = None

  @property
  def primary(self) -> bool:
    return self.index == 0


# Environment variables by which a cluster announces a multi-process job: the sets
# JAX's own cluster detection (jax._src.clusters) reads, and more than one process.
ENVIRONMENTS = (
    ("slurm", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID"), lambda e: int(e["SLURM_NTASKS"]) > 1),
    ("openmpi", ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE"),
     lambda e: int(e["OMPI_COMM_WORLD_SIZE"]) > 1),
    ("tpu", ("TPU_WORKER_HOSTNAMES",), lambda e: "," in e["TPU_WORKER_HOSTNAMES"]),
)


def detect_environment(environ=None) -> str | None:
  """The name of the multi-process environment this process runs in, or None."""
  env = os.environ if environ is None else environ
  for name, keys, multi in ENVIRONMENTS:
    if all(k in env for k in keys):
      try:
        if multi(env):
          return name
      except ValueError:
        continue
  return None


_STATE: dict = {}


def _is_running() -> bool:
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  return jd.global_state.client is not None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300,
               heartbeat_s: int = 100, local_device_ids=None,
               environ=None) -> ProcessInfo:
  """Starts (or joins) the multi-process runtime; a no-op for one process.

  Args:
    coordinator: "host:port" of process 0's coordination service.
    num_processes: processes in the run.
    process_id: this process's index, 0 .. num_processes - 1.
    timeout_s: seconds to wait for every process to reach the coordinator.
    heartbeat_s: seconds without a heartbeat after which a process counts as dead
      (and the run ends).
    local_device_ids: restrict this process to these local devices (e.g. one GPU
      per process).
    environ: the environment to detect a cluster in (default ``os.environ``).

  Returns:
    A ``ProcessInfo``. Called again with the same arguments: the same info.

  Raises:
    ValueError: some but not all of the three flags, or inconsistent values.
    DistributedError: the coordinator was not reached within ``timeout_s``.
  """
  given = {"--coordinator": coordinator, "--num_processes": num_processes,
           "--process_id": process_id}
  missing = [k for k, v in given.items() if v is None or v == ""]
  if 0 < len(missing) < 3:
    raise ValueError(f"multi-process start-up needs --coordinator, --num_processes and "
                     f"--process_id together; missing {', '.join(missing)}")
  if not missing:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes="
                       f"{num_processes})")
    if ":" not in coordinator:
      raise ValueError(f"--coordinator={coordinator!r} must be host:port")
  source = "flags" if not missing else detect_environment(environ)
  if source is None or (source == "flags" and num_processes == 1):
    info = ProcessInfo(0, 1, "single")
    _STATE.setdefault("info", info)
    return _STATE["info"]
  if _is_running():
    info = _STATE.get("info")
    if info is None:       # started by someone else (e.g. a notebook)
      info = ProcessInfo(jax.process_index(), jax.process_count(), "external")
    return info
  if _cpu_only():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = dict(initialization_timeout=int(timeout_s) + 10,
                heartbeat_timeout_seconds=int(heartbeat_s))
  if local_device_ids is not None:
    kwargs["local_device_ids"] = local_device_ids
  where = (f"process {process_id} of {num_processes} via coordinator {coordinator}"
           if source == "flags" else f"the {source} environment's processes")
  t0 = time.monotonic()
  if source == "flags" and process_id != 0:
    _wait_for_port(coordinator, timeout_s, where)
  # JAX's client aborts the process (a fatal log line) when it gives up; end first,
  # with a message that says what was waited for.
  watch = _watchdog(timeout_s, f"{where}: not every process reached the coordinator "
                    "(check that all were started with the same --coordinator and "
                    "--num_processes and distinct --process_id)")
  try:
    if source == "flags":
      jax.distributed.initialize(coordinator_address=coordinator,
                                 num_processes=int(num_processes),
                                 process_id=int(process_id), **kwargs)
    else:
      jax.distributed.initialize(**kwargs)
    watch.set()
  except Exception as e:
    watch.set()  # XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE), RuntimeError
    raise DistributedError(
        f"could not start the multi-process runtime as {where} within {timeout_s} s "
        f"(after {time.monotonic() - t0:.0f} s): {type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}. Check that every process was "
        "started with the same --coordinator and --num_processes, distinct "
        "--process_id, and that the coordinator's port is reachable") from e
  info = ProcessInfo(jax.process_index(), jax.process_count(), source,
                     coordinator if source == "flags" else None)
  _STATE["info"] = info
  return info


def _wait_for_port(address: str, timeout_s: float, where: str) -> None:
  """Waits until something listens at ``address`` ("host:port"), or raises."""
  host, port = address.rsplit(":", 1)
  t_end = time.monotonic() + timeout_s
  last = None
  while time.monotonic() < t_end:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return
    except OSError as e:
      last = e
      time.sleep(0.2)
  raise DistributedError(f"could not start the multi-process runtime as {where}: nothing "
                         f"answered at {address} within {timeout_s:g} s ({last}); start "
                         "process 0 there, or fix --coordinator")


def _watchdog(seconds: float, what: str) -> threading.Event:
  """A daemon thread that ends the process (status ``EXIT_TIMEOUT``) with a clear
  message unless the returned event is set within ``seconds``."""
  done = threading.Event()

  def watch():
    if not done.wait(seconds):
      print(f"error: {what}: did not finish within {seconds:g} s; ending the run. "
            "Re-run every process with the same command to resume.",
            file=sys.stderr, flush=True)
      os._exit(EXIT_TIMEOUT)  # pylint: disable=protected-access
  threading.Thread(target=watch, daemon=True, name=f"watchdog:{what[:40]}").start()
  return done


def _cpu_only() -> bool:
  """True when JAX will run on CPU (asked without starting a backend)."""
  platforms = (os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "").lower()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top,unused-import
    return False
  except ImportError:
    pass
  try:
    from jax._src.lib import xla_client  # pylint: disable=g-import-not-at-top
    return not any(n in xla_client._get_registered_plugin_names()  # pylint: disable=protected-access
                   for n in ("cuda", "rocm", "tpu"))
  except Exception:  # pylint: disable=broad-except
    return True


def info() -> ProcessInfo:
  """This process's ``ProcessInfo`` (one process unless ``initialize`` started more)."""
  return _STATE.get("info") or ProcessInfo(jax.process_index(), jax.process_count(),
                                           "single" if jax.process_count() == 1 else "external")


def barrier(name: str, timeout_s: float = 600) -> None:
  """Waits until every process reaches ``name``; no-op for one process.

  Raises:
    DistributedError: not every process arrived within ``timeout_s`` (one died, or
      is still working: the message names the barrier and the wait).
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  try:
    jd.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))
  except Exception as e:  # pylint: disable=broad-except
    raise DistributedError(
        f"process {jax.process_index()} of {jax.process_count()}: not every process "
        f"reached barrier {name!r} within {timeout_s:g} s ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); a process died or is far "
        "behind: re-run every process with the same command to resume") from e


@contextlib.contextmanager
def deadline(seconds: float | None, what: str):
  """Bounds a block of collective work: if it has not finished after ``seconds``,
  prints what was being waited for and ends the process (status ``EXIT_TIMEOUT``).

  XLA's cross-process collectives block without a time-out; a peer that died
  mid-collective would leave this process waiting forever otherwise.
  """
  if not seconds or jax.process_count() == 1:
    yield
    return
  done = _watchdog(seconds, f"process {jax.process_index()} of {jax.process_count()}: "
                   f"{what} (a peer process died or hangs)")
  try:
    yield
  finally:
    done.set()


def shutdown() -> None:
  """Leaves the runtime (every process should call it at the end of a run)."""
  if _is_running():
    jax.distributed.shutdown()
  _STATE.pop("info", None)
