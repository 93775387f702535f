"""A fork server ("zygote") for the rule scripts: jobs start without importing torch again.

Every rule job is a fresh Python that imports torch and the project (2-3 s) before doing a few
seconds of real work; over a benchmark of hundreds of short jobs that start-up is about half the
wall-clock. :func:`run`, which every rule script calls, hands the job instead to a per-user server
that has imported torch, :mod:`reuse.workflow` and Snakemake's script support once, and runs each
job in a forked child of itself. The child takes over the job's stdin/stdout/stderr (sent over the
socket), its working folder, environment, ``sys.path``, ``sys.argv``, umask and CPU affinity, so a
job behaves as in a fresh process; the rule script waits for the child and exits with its status.

Why it is safe:

* **Never stale.** The socket's name is a key made of the user, the interpreter, the repository
  folder of the imported ``reuse`` package, the (path, mtime, size) of every source file under it
  and of the compiled extension, the environment variables read at import (threads, locale,
  ``PYTHON*``, ``TORCH*``, ``REUSE_*``), the process's cgroup and its SLURM job. Any change makes the
  client start a fresh server; old ones exit when idle (:data:`IDLE_S`).
* **Fork-safe.** The server imports only what is cheap and shared (:data:`PRELOAD`), runs no torch
  op, never initialises CUDA (it refuses to serve if an import did) and starts no thread pool of its
  own (numpy's BLAS pool, started at import, is fork-aware; pandas is left out: it loads pyarrow,
  whose allocator starts a background thread). A job does all of that in its child, after the fork.
* **Same results.** Jobs seed every generator they use and set their thread count themselves; the
  server touches no generator and configures no ``logging`` handler a child would inherit.
* **Killed like a plain job.** Each child watches its client's end of the connection: when the
  client goes away (even by SIGKILL) the child exits at once (status 137). SIGTERM, SIGINT and
  SIGHUP sent to the client are forwarded to the child, and a child killed by a signal kills its
  client with the same signal.
* **Falls back.** Whatever fails before the job has started in a child (no server and none can be
  started within :data:`START_TIMEOUT_S`, a refused request, a platform without ``fork``), the job
  runs in the client process the ordinary way. A server that failed to start is not tried again
  for that key for :data:`FAILED_RETRY_S` (its log stays in the socket folder).

Environment: ``REUSE_ZYGOTE=0`` runs every job in its own process (no server is contacted);
``REUSE_ZYGOTE_DIR`` names the socket folder (default ``$XDG_RUNTIME_DIR/reuse-zygote``, else
``/tmp/reuse-zygote-<uid>``); ``REUSE_ZYGOTE_IDLE_S`` overrides :data:`IDLE_S` (and
:data:`SLURM_IDLE_S`, the shorter wait of a server started inside a SLURM job).

Command line: ``python -m reuse.zygote serve SOCKET [--idle S]`` (what a client starts),
``python -m reuse.zygote path`` (the socket this environment would use), ``python -m reuse.zygote
stop`` (stop the servers in the socket folder). docs/zygote.md has the whole story.

This module imports only the standard library at its top: a rule script pays nothing for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import os
import pickle
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IDLE_S = 120.0  # a server with no job and no connection for this long exits
# ... inside a SLURM job: there a server serves only that job's rules (its key holds the job id), and
# where SLURM tracks processes without cgroups it outlives the job, idle, outside its accounting
SLURM_IDLE_S = 10.0
START_TIMEOUT_S = 20.0  # how long a client waits for the server it started before running the job itself
FAILED_RETRY_S = 600.0  # after a failed start, clients of the same key run jobs themselves this long
HANDSHAKE_TIMEOUT_S = 30.0  # a client's wait from its connection to the job's start in a child
REQUEST_TIMEOUT_S = 5.0  # a server's wait for a request (it serves one connection at a time)
# What the server imports before forking: torch and the project's shared stages (the registry comes
# with reuse.workflow), and the Snakemake classes the job's object unpickles into. Method stages and
# pandas are imported by the jobs that need them. TorchDynamo too: torch imports it lazily, but every
# optimizer does when it is made and at each step (torch.optim's wrappers): 1.5 s per training job.
PRELOAD = ("numpy", "torch", "torch._dynamo", "snakemake.script", "reuse.workflow")
# Environment variables read while those modules import (thread pools, locale and I/O encoding, the
# interpreter, torch, the project's switches): a server serves only clients that agree on them all.
KEY_ENV_PREFIXES = ("PYTHON", "TORCH", "REUSE_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO_", "VECLIB_",
                    "NUMEXPR_", "LC_")
KEY_ENV_NAMES = ("LANG", "LD_PRELOAD", "LD_LIBRARY_PATH", "SLURM_JOB_ID")
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux

# Messages on the connection: a kind byte and a payload length, then the payload.
#   client -> server  the request (with the job's fds attached to its header), then b"G" (go)
#   child  -> client  P <pid> (ready, waiting for go) ... X <exit status>
#   server -> client  E <why> (the job did not start), X <status> / S <signal> once the child is reaped
_HEADER = struct.Struct("!cI")


class NotStarted(Exception):
    """Why a job could not be handed to a fork server; it then runs in the client process."""


class _Stopped(Exception):
    """A server's SIGTERM (``python -m reuse.zygote stop``): it ends as after an idle period."""


# ----------------------------------------------------------------------------- client
def run(snakemake: Any, target: str) -> None:
    """Run ``target`` (``"module:function"``), called as ``function(snakemake)``, for a rule script.

    Through the fork server when one is reachable or can be started; otherwise, or when anything
    fails before the job has started in a forked child, in this process. Returns when the job
    succeeded; exits (or dies of the same signal) as the job did otherwise.
    """
    _split_target(target)  # a malformed target fails here, the same way on both paths
    called = time.time()
    handed = None
    if disabled() is None:
        try:
            handed = _hand_over(snakemake, target)
        except Exception as e:  # noqa: BLE001  (anything at all before the job started: run it here)
            _note(f"{e}; running the job in this process")
    if handed is None:
        try:
            call(target, snakemake)
        except BaseException as e:
            code = e.code if isinstance(e, SystemExit) else 1
            _record_times(snakemake, called, ("exit", code if isinstance(code, int) else 1), forked=False)
            raise
        _record_times(snakemake, called, ("exit", 0), forked=False)
        return
    conn, pid = handed
    with conn:
        status = _wait(conn, pid)
    _record_times(snakemake, called, status, forked=True)
    _exit_as(status, pid)


def _record_times(snakemake: Any, called: float, status: tuple[str, int], forked: bool) -> None:
    """With ``REUSE_JOB_TIMES`` naming a file, append one JSON line for this job: its rule, first
    output, the run folder it wrote (where an output is a run.json), when its process started (the rule script's interpreter and Snakemake's preamble run
    between that and ``called``), when the job was handed on, when it ended, and how
    (``bench/workflow.py`` reads these to split each job's wall-clock into start-up and work)."""
    where = os.environ.get("REUSE_JOB_TIMES")
    if not where:
        return
    import json

    outputs = [str(f) for f in getattr(snakemake, "output", []) or []]
    line = json.dumps({"rule": str(getattr(snakemake, "rule", "")), "output": outputs[0] if outputs else "",
                       "run": next((str(Path(f).parent) for f in outputs if Path(f).name == "run.json"), None),
                       "started": _process_start(), "called": called, "ended": time.time(),
                       "status": list(status), "forked": forked}) + "\n"
    fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of O_APPEND: lines of concurrent jobs do not interleave
    finally:
        os.close(fd)


def _process_start() -> float | None:
    """This process's start (seconds since the epoch, to the kernel's clock tick), from /proc."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[19])  # starttime, field 22 of proc(5): clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def disabled() -> str | None:
    """Why jobs cannot go through a fork server here (None when they can)."""
    if os.environ.get("REUSE_ZYGOTE", "1").strip().lower() in ("0", "false", "no", "off"):
        return "REUSE_ZYGOTE=0"
    if sys.platform != "linux":
        return f"the fork server runs on Linux only (this is {sys.platform})"
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return "this Python has no os.fork or socket.send_fds"
    return None


def call(target: str, snakemake: Any) -> None:
    """Import ``target`` and call it with the Snakemake object: a job, in whichever process runs it."""
    module, name = _split_target(target)
    fn: Any = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    fn(snakemake)


def _split_target(target: str) -> tuple[str, str]:
    module, sep, name = str(target).partition(":")
    if not (module and sep and name):
        raise ValueError(f"a fork server target is 'module:function', not {target!r}")
    return module, name


def _note(message: str) -> None:
    print(f"reuse.zygote: {message}", file=sys.stderr, flush=True)


def _hand_over(snakemake: Any, target: str) -> tuple[socket.socket, int] | None:
    """Start the job in a child of the fork server: the connection and the child's pid, once the
    child has been told to go. None when no server is to be tried (a recent failed start)."""
    request = _request(snakemake, target)
    payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    path = socket_path()
    conn = _connect(path) or _start_server(path)
    if conn is None:
        return None
    try:
        pid = _submit(conn, payload, request["fds"])
    except BaseException:
        conn.close()  # a child that was not told to go sees the connection close and exits unstarted
        raise
    return conn, pid


def _request(snakemake: Any, target: str) -> dict[str, Any]:
    """Everything the child needs to be this process: plain values only, so the server can read it
    without unpickling the job (that happens in the child, under the client's ``sys.path``)."""
    mask = os.umask(0)
    os.umask(mask)
    return {"snakemake": pickle.dumps(snakemake, protocol=pickle.HIGHEST_PROTOCOL), "target": target,
            "cwd": os.getcwd(), "env": dict(os.environ), "path": list(sys.path), "argv": list(sys.argv),
            "pid": os.getpid(), "umask": mask, "affinity": sorted(os.sched_getaffinity(0)),
            "fds": [fd for fd in (0, 1, 2) if _is_open(fd)]}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _submit(conn: socket.socket, payload: bytes, fds: list[int]) -> int:
    """Send the request with the job's fds; wait for the child to be ready, then tell it to go.
    Raises :class:`NotStarted` (or ``OSError``) while the job has not started: up to the go, the
    child waits, and a connection closed before it makes the child exit without running the job."""
    conn.settimeout(HANDSHAKE_TIMEOUT_S)
    socket.send_fds(conn, [_HEADER.pack(b"Q", len(payload))], fds)
    conn.sendall(payload)
    kind, text = _recv_msg(conn) or (b"", "the fork server closed the connection")
    if kind != b"P":
        raise NotStarted(f"the fork server did not start the job ({kind.decode() or 'EOF'}: {text})")
    pid = int(text)
    _send_msg(conn, b"G")
    return pid


def _wait(conn: socket.socket, pid: int) -> tuple[str, int]:
    """Wait for the child's status, forwarding SIGTERM, SIGINT and SIGHUP to it meanwhile:
    ``("exit", code)``, ``("signal", number)`` or ``("lost", 0)`` (the child and the server are gone)."""
    conn.settimeout(None)
    with _forwarding_signals(pid):
        try:
            msg = _recv_msg(conn)
        except OSError:  # reset: the child and the server are both gone
            msg = None
    if msg is None:
        return ("lost", 0)
    kind, text = msg
    return ("signal", int(text)) if kind == b"S" else ("exit", int(text)) if kind == b"X" else ("lost", 0)


@contextlib.contextmanager
def _forwarding_signals(pid: int) -> Iterator[None]:
    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            old[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread: signals stay with this process
        pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _exit_as(status: tuple[str, int], pid: int) -> None:
    """Leave as the job did: return on success, else exit with its code or die of its signal."""
    how, value = status
    if how == "exit":
        if value != 0:
            raise SystemExit(value)
        return
    if how == "signal":
        sys.stdout.flush()
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        raise SystemExit(128 + value)  # a signal whose default is not to die
    _note(f"lost the job's child (pid {pid}) and its fork server before the job reported its status")
    raise SystemExit(1)


# ----------------------------------------------------------------------------- where and which server
def socket_dir() -> Path:
    """The folder of this user's sockets, created private (0700); :class:`NotStarted` if it is not."""
    uid = os.getuid()
    if os.environ.get("REUSE_ZYGOTE_DIR"):
        where = Path(os.environ["REUSE_ZYGOTE_DIR"])
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        where = Path(runtime) / "reuse-zygote" if runtime and _owned_dir(Path(runtime), uid) else \
            Path(f"/tmp/reuse-zygote-{uid}")
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(where)
    except OSError as e:
        raise NotStarted(f"cannot make the socket folder {where}: {e}") from None
    if not _owned_dir(where, uid) or st.st_mode & 0o077:
        raise NotStarted(f"the socket folder {where} is not a private folder (0700) of user {uid}")
    return where


def _owned_dir(path: Path, uid: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def socket_path() -> Path:
    """The socket of the server that may run this process's jobs (:func:`server_key`)."""
    path = socket_dir() / f"{server_key()}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise NotStarted(f"the socket path {path} is too long for a Unix socket; set REUSE_ZYGOTE_DIR shorter")
    return path


def package_dir() -> Path:
    """The folder of the ``reuse`` package this process imports."""
    import reuse

    return Path(reuse.__file__).resolve().parent


def server_key(environ: dict[str, str] | None = None, package: Path | None = None) -> str:
    """A short hash of everything a server's imported code and state depend on: a server answers only
    clients with the same key, so a changed source file, extension, interpreter, environment,
    cgroup or SLURM job means another server."""
    import sysconfig

    env = os.environ if environ is None else environ
    package = package_dir() if package is None else package
    site = sysconfig.get_paths()["purelib"]
    parts = [os.getuid(), sys.executable, sys.version, str(package.parent), _stat_key(site), _cgroup(),
             sorted((k, v) for k, v in env.items() if _keyed(k)),
             source_digest(package)]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def _keyed(name: str) -> bool:
    """Whether the environment variable ``name`` is part of a server's key (this module's own
    switches are the client's business, not read at import)."""
    return (name.startswith(KEY_ENV_PREFIXES) or name in KEY_ENV_NAMES) and not name.startswith("REUSE_ZYGOTE")


def source_digest(package: Path) -> str:
    """A hash of the (path, mtime, size) of every source and data file of ``package`` and of its
    compiled extension ``_C*.so``: what a server's imported code was read from."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".py", ".yaml", ".json")) or (folder == str(package) and name.startswith("_C")):
                path = os.path.join(folder, name)
                h.update(f"{os.path.relpath(path, package)}\0{_stat_key(path)}\n".encode())
    return h.hexdigest()


def _stat_key(path: str | os.PathLike) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


def _cgroup() -> str:
    """This process's cgroup: jobs in another one (another SLURM job or step, another container)
    must not run in a server whose CPU, memory and device limits are not theirs."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- starting a server
def _connect(path: Path) -> socket.socket | None:
    """A connection to the server listening at ``path``; None if none is (no file, or a stale one)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        s.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        return None
    except BaseException:
        s.close()
        raise
    return s


def _start_server(path: Path) -> socket.socket | None:
    """Start a server for ``path`` (one at a time, under a lock, so racing clients end with one) and
    connect to it. None when a start for this key failed recently; :class:`NotStarted` if it fails now."""
    failed = path.with_suffix(".failed")
    if _recent(failed):
        return None
    with _locked(path.parent / "start.lock", START_TIMEOUT_S + 10):
        conn = _connect(path)  # another client may have started it while we waited for the lock
        if conn is not None or _recent(failed):
            return conn
        try:
            return _await_server(_spawn_server(path), path)
        except NotStarted as e:
            failed.write_text(f"{e}\n")
            raise


def _recent(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < FAILED_RETRY_S
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NotStarted(f"another job has held {path} for over {timeout:.0f}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _spawn_server(path: Path) -> Any:
    """Start ``python -m reuse.zygote serve PATH`` detached (own session, no terminal, output to
    ``<key>.log``), from the folder holding this ``reuse`` package so that it imports the same one."""
    import subprocess

    with open(path.with_suffix(".log"), "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "reuse.zygote", "serve", os.fspath(path)],
                                cwd=package_dir().parent, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)


def _await_server(proc: Any, path: Path) -> socket.socket:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if proc.poll() is not None:
            raise NotStarted(f"the fork server exited with status {proc.returncode} while starting "
                             f"(see {path.with_suffix('.log')})")
        time.sleep(0.05)
    raise NotStarted(f"the fork server did not start within {START_TIMEOUT_S:.0f}s "
                     f"(see {path.with_suffix('.log')})")


# ----------------------------------------------------------------------------- messages
def _send_msg(sock: socket.socket, kind: bytes, text: str = "") -> None:
    data = text.encode()
    sock.sendall(_HEADER.pack(kind, len(data)) + data)


def _recv_msg(sock: socket.socket) -> tuple[bytes, str] | None:
    """One message, or None when the connection closed first."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    kind, n = _HEADER.unpack(head)
    data = _recv_exact(sock, n)
    return None if data is None else (kind, data.decode(errors="replace"))


def _recv_exact(sock: socket.socket, n: int, first: bytes = b"") -> bytes | None:
    buf = bytearray(first)
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ----------------------------------------------------------------------------- the server
def serve(path: Path, idle_s: float = IDLE_S) -> int:
    """Preload, listen at ``path`` and fork a child per job until idle for ``idle_s``. Exit status:
    0 after an idle period (or when another server already listens there), 3 when the server cannot
    serve the key its socket is named after."""
    _log(f"starting for {path} (python {sys.executable}, idle {idle_s:.0f}s)")
    environ = dict(os.environ)  # as the client that started it saw it (an import may set variables:
    for module in PRELOAD:      # TorchDynamo sets TORCHINDUCTOR_CACHE_DIR)
        importlib.import_module(module)
    problem = _unfit(path, environ)
    if problem:
        _log(problem)
        return 3
    _sweep(path.parent, keep=path.stem)  # while the client that started this server holds the start lock
    listener = _listen(path)
    if listener is None:
        _log(f"another server already listens at {path}")
        return 0
    inode = os.stat(path).st_ino
    pid_file = path.with_suffix(".pid")
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, pid_file)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _log(f"listening (pid {os.getpid()})")
    children: dict[int, socket.socket] = {}
    try:
        _serve_loop(listener, path, children, idle_s)
    except _Stopped:
        _log("stopped by SIGTERM; running jobs go on")
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                path.unlink()
        pid_file.unlink(missing_ok=True)
    path.with_suffix(".log").unlink(missing_ok=True)  # a server that ends well leaves nothing behind
    return 0


def _unfit(path: Path, environ: dict[str, str]) -> str | None:
    """Why this server must not serve the socket it was started for (None if it may); ``environ``: the
    environment it was started with."""
    import torch

    # torch's own flag, and the CUDA driver library, which loads only once something calls into CUDA
    # (a bare torch.cuda.is_available() does): after either, a forked child could not use the GPU
    if torch.cuda.is_initialized() or "/libcuda.so" in Path("/proc/self/maps").read_text():
        return "CUDA was initialised while preloading: jobs forked from here could not use the GPU"
    key = server_key(environ)
    if path.stem != key:
        return (f"this server's key is {key}, not the {path.stem} it was started for: the sources or the "
                "environment changed while it was starting")
    return None


def _exit_on_signal(signum, frame):
    raise _Stopped


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} zygote[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def _listen(path: Path) -> socket.socket | None:
    """A listening socket at ``path``, replacing a stale socket file; None if a server listens there."""
    live = _connect(path)
    if live is not None:
        live.close()
        return None
    path.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # the socket file is born 0600 (its folder is 0700): docs/security.md
    try:
        s.bind(os.fspath(path))
    finally:
        os.umask(mask)
    os.chmod(path, 0o600)
    s.listen(64)
    return s


def _sweep(where: Path, keep: str) -> None:
    """Remove what dead servers left (their sockets, pid files and logs) and expired failure marks,
    but for the key ``keep`` (this server's: its log is being written, its socket is replaced)."""
    for pid_file in where.glob("*.pid"):
        if pid_file.stem == keep:
            continue
        try:
            os.kill(int(pid_file.read_text()), 0)
        except ProcessLookupError:
            for suffix in (".sock", ".log", ".pid"):
                pid_file.with_suffix(suffix).unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
    for failed in where.glob("*.failed"):
        if not _recent(failed):
            failed.with_suffix(".log").unlink(missing_ok=True)
            failed.unlink(missing_ok=True)


def _serve_loop(listener: socket.socket, path: Path, children: dict[int, socket.socket], idle_s: float) -> None:
    """Accept and fork until idle. Going idle, the socket file goes first (no new client can find
    it), then the connections already queued are served, then the last children are waited for."""
    listener.settimeout(0.25)  # how often finished children are reaped
    last_busy = time.monotonic()
    retiring = False
    while True:
        _reap(children)
        if children:
            last_busy = time.monotonic()
        elif retiring:
            return
        elif time.monotonic() - last_busy > idle_s:
            _log(f"idle for {idle_s:.0f}s: exiting")
            with contextlib.suppress(OSError):
                path.unlink()
            listener.setblocking(False)
            retiring = True
        try:
            conn, _ = listener.accept()
        except (TimeoutError, BlockingIOError, InterruptedError):
            if retiring:
                time.sleep(0.25)
            continue
        _accept(conn, listener, children)
        last_busy = time.monotonic()


def _reap(children: dict[int, socket.socket]) -> None:
    """Collect finished children and tell their clients how each ended (a child that exits normally
    has told its client already; this also covers one killed by a signal)."""
    while children:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        sig = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else 0
        kind, value = (b"S", sig) if sig else (b"X", os.waitstatus_to_exitcode(wait_status))
        _log(f"job {pid} ended: {'signal' if sig else 'exit status'} {value}")
        with contextlib.suppress(OSError), conn:
            _send_msg(conn, kind, str(value))


def _accept(conn: socket.socket, listener: socket.socket, children: dict[int, socket.socket]) -> None:
    """Read one request and fork its child; a request that cannot be read is refused (the client
    then runs its job itself)."""
    fds: list[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT_S)
        _check_peer(conn)
        request, fds = _read_request(conn)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except Exception as e:
        _log(f"refused a request: {e!r}")
        with contextlib.suppress(OSError), conn:
            _send_msg(conn, b"E", repr(e))
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        try:
            _child(conn, listener, children, request, fds)
        finally:
            os._exit(70)  # _child never returns; this is for a bug in it
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    _log(f"job {pid} for client {request['pid']}: {request['target']}")


def _check_peer(conn: socket.socket) -> None:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        raise PermissionError(f"a client of user {uid} (this server is user {os.getuid()}'s)")


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    try:
        head = _recv_exact(conn, _HEADER.size, head)
        if head is None:
            raise EOFError("the client closed the connection")
        kind, n = _HEADER.unpack(head)
        data = _recv_exact(conn, n) if kind == b"Q" else None
        if data is None:
            raise EOFError("no request")
        request = pickle.loads(data)  # builtins only: the job's own object stays pickled
        if len(fds) != len(request["fds"]):
            raise ValueError(f"{len(fds)} file descriptors for the {len(request['fds'])} announced")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


# ----------------------------------------------------------------------------- the child
def _child(conn: socket.socket, listener: socket.socket, others: dict[int, socket.socket],
           request: dict[str, Any], fds: list[int]) -> None:
    """Become the job's process, tell the client, and on its go run the job. Never returns."""
    listener.close()  # a child must not keep the server's socket, nor other jobs' connections, open
    for other in others.values():
        other.close()
    try:
        snakemake = _become(request, fds)
        _send_msg(conn, b"P", str(os.getpid()))
        conn.settimeout(None)
        go = _recv_msg(conn)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            _send_msg(conn, b"E", f"could not set up the job's process: {e!r}")
        os._exit(75)
    if go is None or go[0] != b"G":
        os._exit(75)  # the client gave up before the go: it runs the job itself
    done = threading.Event()
    threading.Thread(target=_watch_client, args=(conn, done), daemon=True, name="zygote-watch").start()
    status = _run_job(request["target"], snakemake)
    _finish()
    done.set()
    with contextlib.suppress(OSError):
        _send_msg(conn, b"X", str(status))
    os._exit(status)


def _become(request: dict[str, Any], fds: list[int]) -> Any:
    """Take on the client's fds, folder, environment, paths, umask and CPUs; return the job's object."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target_fd, fd in zip(request["fds"], fds):
        os.dup2(fd, target_fd)
        if fd != target_fd:
            os.close(fd)
    for fd in {0, 1, 2} - set(request["fds"]):
        with contextlib.suppress(OSError):
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, request["affinity"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    sys.argv[:] = request["argv"]
    importlib.invalidate_caches()  # modules written since the server listed their folders
    import tempfile

    tempfile.tempdir = None  # found again from the job's TMPDIR
    _reseed()
    _fresh_std_streams(request["env"])
    return pickle.loads(request["snakemake"])


def _reseed() -> None:
    """Seed afresh the generators a fresh process seeds from the system at start-up (torch's CPU
    generator and numpy's global one; ``random`` does it itself after a fork). Left alone, every
    child would draw the same numbers before seeding, as no two fresh processes do."""
    if "torch" in sys.modules:
        sys.modules["torch"].default_generator.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _fresh_std_streams(env: dict[str, str]) -> None:
    """``sys.stdin``/``stdout``/``stderr`` over fds 0-2 as a fresh interpreter makes them: buffered
    unless ``PYTHONUNBUFFERED`` (then stdout and stderr write straight through), line-buffered on a
    terminal and for stderr, with the server's encodings (the key's locale variables make them the
    client's)."""
    buffered = not env.get("PYTHONUNBUFFERED")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, name)
        stream = None
        if _is_open(fd):
            write = fd > 0
            raw = open(fd, "wb" if write else "rb", buffering=-1 if buffered or not write else 0, closefd=False)
            stream = io.TextIOWrapper(raw, encoding=getattr(old, "encoding", None), errors=getattr(old, "errors", None),
                                      newline="\n", line_buffering=buffered and (fd == 2 or os.isatty(fd)),
                                      write_through=not buffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _watch_client(conn: socket.socket, done: threading.Event) -> None:
    """End the job as soon as its client is gone: a killed rule script kills its job."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    if not done.is_set():
        os._exit(137)


def _run_job(target: str, snakemake: Any) -> int:
    """Run the job; its exit status as a fresh interpreter would give it (the traceback of an
    uncaught exception goes to the job's stderr; a KeyboardInterrupt ends it by SIGINT)."""
    try:
        call(target, snakemake)
        return 0
    except SystemExit as e:
        return _exit_code(e.code)
    except KeyboardInterrupt as e:
        sys.excepthook(type(e), e, e.__traceback__.tb_next)
        _flush_std_streams()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as e:
        sys.excepthook(type(e), e, e.__traceback__.tb_next)
        return 1


def _exit_code(code: Any) -> int:
    """What ``sys.exit(code)`` makes the exit status (a message is printed, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish() -> None:
    """What an interpreter does on its way out: wait for non-daemon threads, run the atexit
    handlers, flush the std streams."""
    import atexit

    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    _flush_std_streams()


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


# ----------------------------------------------------------------------------- command line
def stop() -> int:
    """Stop (SIGTERM) the servers listed in the socket folder; their running jobs finish."""
    where = socket_dir()
    n = 0
    for pid_file in where.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            n += 1
    print(f"stopped {n} fork server(s) in {where}")
    return 0


def default_idle_s() -> float:
    """How long a server started in this environment waits for work before it exits."""
    if os.environ.get("REUSE_ZYGOTE_IDLE_S"):
        return float(os.environ["REUSE_ZYGOTE_IDLE_S"])
    return SLURM_IDLE_S if os.environ.get("SLURM_JOB_ID") else IDLE_S


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m reuse.zygote", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run a fork server at SOCKET (what a rule script starts)")
    s.add_argument("socket", type=Path)
    s.add_argument("--idle", type=float, default=default_idle_s(),
                   help=f"exit after this many seconds with nothing to do (default: REUSE_ZYGOTE_IDLE_S, else "
                        f"{IDLE_S:.0f}, {SLURM_IDLE_S:.0f} in a SLURM job)")
    sub.add_parser("path", help="print the socket a rule script in this environment would use")
    sub.add_parser("stop", help="stop the fork servers in the socket folder")
    args = p.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.socket.absolute(), args.idle)
    if args.cmd == "path":
        print(socket_path())
        return 0
    return stop()


if __name__ == "__main__":
    sys.exit(main())
