"""Start and stop the `tritonserver` that `nvidia-pytriton` ships, with the environment its
Python backend needs and safe defaults. Used by `make serve` (through `serving.serve`), by the
supervisor (`serving.supervisor`), by the load tests and by the tests.

The Python backend's stub must embed this virtual environment's Python (numpy<2, onnxruntime,
and this project, installed editable by `make setup`: the embedded interpreter ignores
`PYTHONPATH`): the 3.11 stub is copied into the backend folder, the venv's `bin` goes first on
`PATH`, and `LD_LIBRARY_PATH` holds the wheel's libraries and Python's LIBDIR. With
`$T5QA_TRITON_HOME` set (`make gpu-check`'s offline kit) the server is taken from there instead.

Security defaults:
  * Model control mode is `none`: the repository is loaded once, at start; nothing can load,
    unload or replace a model at run time.
  * The administrative APIs (`RESTRICTED_APIS`: model-repository, shared-memory, trace,
    logging) need the header `t5qa-admin-key: <key>` over HTTP and the metadata
    `triton-grpc-protocol-t5qa-admin-key: <key>` over gRPC (Triton prefixes gRPC keys). The key
    is `$T5QA_ADMIN_KEY`; when that is unset a random key is made for each start and never
    shown, so these APIs are closed to everyone but the process that started the server
    (`TritonServer.admin_key`). Shared-memory registration (system and CUDA) is one of them,
    so no client can map server memory without the key. Inference, health, metadata,
    model-config and statistics stay open: clients, probes and monitoring need them.
    Refused calls get HTTP 403, or gRPC UNAVAILABLE "This protocol is restricted" (Triton's
    choice of code: a client retrying on UNAVAILABLE must not retry admin calls).
  * Caveat: Triton takes the key on its command line, which local users can read in
    /proc/<pid>/cmdline; on a shared host run it in its own container or user namespace.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

TRITON_HOME_ENV = "T5QA_TRITON_HOME"  # the GPU kit's copy (bench.gpu_kit); else nvidia-pytriton's


def _site() -> Path:
    """The folder holding `pytriton/tritonserver` and `nvidia_pytriton.libs` (the binaries find
    their libraries by relative paths, so the kit keeps this layout)."""
    if os.environ.get(TRITON_HOME_ENV):
        return Path(os.environ[TRITON_HOME_ENV])
    import pytriton
    return Path(pytriton.__file__).parents[1]


TRITON_HOME = _site() / "pytriton" / "tritonserver"
LIBS = TRITON_HOME.parents[1] / "nvidia_pytriton.libs"
STUB_NAME = "triton_python_backend_stub"
SHM_PREFIX = "triton_python_backend_shm_region_"

ADMIN_KEY_ENV = "T5QA_ADMIN_KEY"
ADMIN_HEADER = "t5qa-admin-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton looks for this prefix + key in gRPC metadata
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-.~]{16,256}")

log = logging.getLogger("serving.server")


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: the foreground commands' way to stop cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def prepare_python_backend() -> Path:
    """Copy the stub built for this Python into the python backend folder (once)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = TRITON_HOME / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    target = TRITON_HOME / "backends" / "python" / STUB_NAME
    if not target.is_file() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    return TRITON_HOME / "backends"


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ADMIN_KEY_ENV, None)  # the key reaches Triton as a flag; the models need not see it
    # The decode loop frees, from its own thread, large arrays of ever-changing sizes: keep
    # glibc from parking that memory in per-thread arenas, and hand large blocks back at once.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "1048576")
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(LIBS), sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p)
    return env


def resolve_admin_key(key: str | None = None) -> tuple[str, bool]:
    """The admin key and whether it was generated: `key`, else `$T5QA_ADMIN_KEY`, else random.
    A given key must be 16-256 characters of [A-Za-z0-9_-.~] (it becomes part of a flag)."""
    key = key if key is not None else os.environ.get(ADMIN_KEY_ENV) or None
    if key is None:
        return secrets.token_urlsafe(32), True
    if not _KEY_PATTERN.fullmatch(key):
        raise ValueError(f"the admin key (${ADMIN_KEY_ENV}) must be 16 to 256 characters of "
                         "letters, digits, '-', '_', '.', '~'")
    return key, False


def server_flags(repository: str, ports: Ports, exit_timeout_s: int, restricted_apis: tuple[str, ...],
                 admin_key: str) -> list[str]:
    """The tritonserver flags every deployment shares (this launcher, the GPU container):
    repository, model control `none`, ports, exit timeout, strict readiness, restricted APIs."""
    flags = [
        f"--model-repository={repository}",
        "--model-control-mode=none",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--exit-timeout-secs={exit_timeout_s}",
        "--strict-readiness=true",
    ]
    if restricted_apis:
        apis = ",".join(restricted_apis)
        flags += [f"--http-restricted-api={apis}:{ADMIN_HEADER}={admin_key}",
                  f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={admin_key}"]
    return flags


# --- processes under /proc: used by the supervisor, the soak's memory record and the tests ---

def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the comm field may hold spaces


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (the Python backend stubs of a tritonserver)."""
    return [p for p in _pids() if _parent(p) == pid]


def server_processes(server_pid: int) -> list[int]:
    """A tritonserver's pid and its stubs'."""
    return [server_pid, *child_pids(server_pid)]


def stub_pids(server_pid: int, model: str | None = None) -> dict[int, str]:
    """The Python backend stubs of a tritonserver: pid -> the model whose `model.py` it runs."""
    stubs = {}
    for pid in child_pids(server_pid):
        argv = _cmdline(pid)
        if argv and argv[0].endswith(STUB_NAME) and len(argv) > 1:
            name = Path(argv[1]).parents[1].name  # <repository>/<model>/<version>/model.py
            if model is None or name == model:
                stubs[pid] = name
    return stubs


def find_server_pid(grpc_port: int | None = None, http_port: int | None = None) -> int | None:
    """The pid of the tritonserver listening on `grpc_port` / `http_port` (from its flags)."""
    for pid in _pids():
        argv = _cmdline(pid)
        if not argv or not argv[0].endswith("/tritonserver"):
            continue
        if grpc_port is not None and f"--grpc-port={grpc_port}" not in argv:
            continue
        if http_port is not None and f"--http-port={http_port}" not in argv:
            continue
        return pid
    return None


def memory_kib(pid: int) -> dict[str, int]:
    """Resident (`rss`) and proportional (`pss`, shared pages split between their users)
    memory of one process in KiB; zeros if it is gone."""
    result = {"rss": 0, "pss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                result[key.lower()] = int(value.split()[0])
    except OSError:
        pass
    return result


def total_memory_kib(pids: list[int]) -> dict[str, int]:
    """`memory_kib` summed over `pids`, and how many there were. Summed RSS counts the pages
    the processes share (tritonserver's and each Python stub's libraries) once per process;
    summed PSS counts every page once, split between its users."""
    parts = [memory_kib(pid) for pid in pids]
    return {"rss": sum(p["rss"] for p in parts), "pss": sum(p["pss"] for p in parts), "processes": len(pids)}


def _shm_regions(pids: list[int]) -> set[str]:
    return {arg for pid in pids for arg in _cmdline(pid) if arg.startswith(SHM_PREFIX)}


def remove_orphaned_regions(regions: set[str], wait_s: float = 10.0) -> list[str]:
    """Unlink those of `regions` (Python backend shared memory in /dev/shm, 64 MiB each here)
    that no live process names any more; waits up to `wait_s` for orphaned stubs to exit.
    Triton removes them on a clean exit, never after a crash or a kill, and /dev/shm is RAM."""
    deadline = time.monotonic() + wait_s
    while regions & _shm_regions(_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    removed = []
    for region in sorted(regions - _shm_regions(_pids())):
        path = Path("/dev/shm", region)
        if path.exists():
            path.unlink(missing_ok=True)
            removed.append(region)
    return removed


@dataclass
class TritonServer:
    """One tritonserver process over `repository`. `start()` may follow `stop()` (a restart on
    the same ports, with the same admin key)."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    address: str = "0.0.0.0"
    exit_timeout_s: int = 30
    log_file: Path | None = None
    process: subprocess.Popen | None = None
    admin_key: str | None = None  # None: $T5QA_ADMIN_KEY, else a random key (see the module doc)
    restricted_apis: tuple[str, ...] = RESTRICTED_APIS
    extra_args: tuple[str, ...] = ()  # more tritonserver flags, appended last

    def __post_init__(self) -> None:
        self.admin_key, self.admin_key_generated = resolve_admin_key(self.admin_key)
        self.starts = 0
        self._regions: set[str] = set()  # the stubs' shared-memory regions, cleaned after any exit

    def command(self) -> list[str]:
        return [
            str(TRITON_HOME / "bin" / "tritonserver"),
            f"--backend-directory={prepare_python_backend()}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            # Decoder caches cross the stub boundary in shared memory (BLS mode): start big, grow big.
            "--backend-config=python,shm-default-byte-size=67108864",
            "--backend-config=python,shm-growth-byte-size=67108864",
            *server_flags(str(self.repository.resolve()), self.ports, self.exit_timeout_s,
                          self.restricted_apis, self.admin_key),
        ] + list(self.extra_args)

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that open the restricted APIs, for tritonclient's `headers=` argument."""
        prefix = GRPC_HEADER_PREFIX if protocol == "grpc" else ""
        return {prefix + ADMIN_HEADER: self.admin_key}

    def _announce(self, output) -> None:
        apis = ", ".join(self.restricted_apis) or "none"
        if not self.restricted_apis:
            line = "admin APIs are NOT restricted (restricted_apis is empty)"
        elif self.admin_key_generated:
            line = (f"admin APIs ({apis}) are closed: ${ADMIN_KEY_ENV} is unset, so a random key was "
                    f"generated for this start and is not shown; set ${ADMIN_KEY_ENV} to use them")
        else:
            line = (f"admin APIs ({apis}) need header '{ADMIN_HEADER}' (gRPC: "
                    f"'{GRPC_HEADER_PREFIX}{ADMIN_HEADER}') with the key from ${ADMIN_KEY_ENV}")
        log.info(line)
        message = f"[serving.server] {line}\n".encode()
        if output is not None:
            output.write(message)
            output.flush()
        else:
            sys.stderr.buffer.write(message)
            sys.stderr.flush()

    def start(self) -> "TritonServer":
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"tritonserver (pid {self.process.pid}) is already running")
        output = open(self.log_file, "ab") if self.log_file else None
        try:
            self._announce(output)
            self.process = subprocess.Popen(self.command(), env=server_environment(), stdout=output,
                                            stderr=subprocess.STDOUT if output else None)
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def stub_pids(self, model: str | None = None) -> dict[int, str]:
        """This server's Python backend stubs: pid -> model name (optionally only `model`'s)."""
        return stub_pids(self.pid, model) if self.pid else {}

    def processes(self) -> list[int]:
        """tritonserver's pid and its stubs' (empty when not running)."""
        pid = self.pid
        return server_processes(pid) if pid is not None else []

    def memory_kib(self) -> dict[str, int]:
        """RSS and PSS in KiB of tritonserver plus all its stubs (zeros when not running)."""
        return total_memory_kib(self.processes())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} before it was ready"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self.ready():
                self._regions |= _shm_regions(child_pids(self.process.pid))
                return
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, wait for the in-flight requests (exit timeout), then kill if still alive.
        Returns the exit code (negative: the signal that ended it). After any exit, removes the
        stubs' shared-memory regions that Triton left behind (it does not after a crash or kill).

        Triton 2.51 first waits for open HTTP connections to close, serving on them, for up
        to the whole exit timeout; only the time left goes to in-flight inferences, and when
        none is left it exits at once (code 1, or a segfault with requests in flight). So drain
        HTTP clients (take the server out of the load balancer) before stopping it."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self._regions |= _shm_regions(child_pids(self.process.pid))
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s if timeout_s is not None else self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        removed = remove_orphaned_regions(self._regions)
        if removed:
            log.warning("removed %d shared-memory region(s) tritonserver left in /dev/shm", len(removed))
        self._regions.clear()
        return self.process.returncode

    def restart(self, ready_timeout_s: float = 600, stop_timeout_s: float | None = None) -> None:
        """Stop (draining in-flight requests up to the exit timeout, or `stop_timeout_s`, then
        kill), start on the same ports, wait until ready."""
        self.stop(stop_timeout_s)
        self.start()
        self.wait_ready(ready_timeout_s)
