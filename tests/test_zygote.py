"""The fork server of the rule scripts (reuse.zygote): a job run through it is the job run in a
process of its own (same outputs, exit status, stderr; killed with its client), and a client never
uses a server whose code or setting is not its own.

Every job here is a real client process: a script that unpickles a Snakemake object, as Snakemake's
preamble does, and calls ``reuse.zygote.run`` with a stage from tests/helpers.py. Each test's
servers live in a socket folder of its own under /tmp (Unix socket paths are short) and are
stopped when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

from reuse import zygote
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(zygote.disabled() not in (None, "REUSE_ZYGOTE=0"), reason=str(zygote.disabled()))

CLIENT = """import pickle, sys
snakemake = pickle.loads(bytes.fromhex(sys.argv[1]))
from reuse.zygote import run
run(snakemake, sys.argv[2])
"""
TIMEOUT = 120


def job(output: dict[str, Path] | list[Path], threads: int = 1, **params) -> Snakemake:
    """A Snakemake object as a rule's script gets it."""
    out = OutputFiles(fromdict={k: str(v) for k, v in output.items()}) if isinstance(output, dict) else \
        OutputFiles([str(v) for v in output])
    return Snakemake(InputFiles([]), out, Params(fromdict=params), Wildcards(), threads, ResourceList(), Log([]), {},
                     "zygote_test", None)


class Servers:
    """A socket folder, the environment of the clients that use it, and the servers started in it."""

    def __init__(self, pythonpath: list[Path] = ()):
        self.dir = Path(tempfile.mkdtemp(prefix="rz", dir="/tmp"))
        self.client = self.dir.parent / f"{self.dir.name}-client.py"
        self.client.write_text(CLIENT)
        path = os.pathsep.join(map(str, [*pythonpath, ROOT]))
        self.env = {**os.environ, "REUSE_ZYGOTE_DIR": str(self.dir / "s"), "REUSE_ZYGOTE_IDLE_S": "60",
                    "PYTHONPATH": path, "ZYGOTE_TEST_VAR": "from the client"}
        self.env.pop("REUSE_ZYGOTE", None)

    def start(self, target: str, sm: Snakemake, cwd: Path, **env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(self.client), pickle.dumps(sm).hex(), target], cwd=cwd,
                                env={**self.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, target: str, sm: Snakemake, cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, int]:
        """Run one job to its end: the finished client and its pid."""
        p = self.start(target, sm, cwd, **env)
        out, err = p.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err), p.pid

    def socket_path(self) -> Path:
        r = subprocess.run([sys.executable, "-m", "reuse.zygote", "path"], env=self.env, capture_output=True,
                           text=True, timeout=TIMEOUT, cwd=self.dir)  # not ROOT: -m puts the folder first on sys.path
        assert r.returncode == 0, r.stderr
        return Path(r.stdout.strip())

    def pids(self) -> dict[str, int]:
        """The live servers: their pid by socket name."""
        return {p.stem: int(p.read_text()) for p in (self.dir / "s").glob("*.pid")}

    def log(self) -> str:
        return "".join(p.read_text() for p in (self.dir / "s").glob("*.log"))

    def close(self) -> None:
        for pid in self.pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.client.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    s.close()


@pytest.fixture
def fresh_servers():
    made = []

    def make(pythonpath: list[Path] = ()) -> Servers:
        made.append(Servers(pythonpath))
        return made[-1]

    yield make
    for s in made:
        s.close()


def where(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def untimed(log: str) -> str:
    """``log`` without the time stamps that start run_rule's log lines."""
    return re.sub(r"^\d\d:\d\d:\d\d ", "", log, flags=re.M)


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- the same job
def test_a_job_through_the_server_is_the_job_in_its_own_process(servers, tmp_path):
    """Byte-identical weights of a seeded training, and the same process facts (threads, logging
    handlers, folder, environment, std streams, seeded draws), in a child of the server."""
    outs = {}
    for name, env in (("own", {"REUSE_ZYGOTE": "0"}), ("server", {}), ("again", {})):
        d = tmp_path / name
        d.mkdir()
        sm = job({"weights": d / "w.npy", "facts": d / "facts.json", "where": d / "where.json"}, threads=2, seed=7)
        r, client = servers.run("tests.helpers:zygote_train", sm, cwd=tmp_path, **env)
        assert r.returncode == 0, r.stderr
        outs[name] = (d, client)
    server = servers.pids()
    assert len(server) == 1, server
    (own, own_client), (first, first_client), (again, _) = outs.values()
    assert where(own / "where.json")["pid"] == own_client  # REUSE_ZYGOTE=0: in the client itself
    assert where(first / "where.json")["pid"] != first_client
    assert where(first / "where.json")["ppid"] == where(again / "where.json")["ppid"] == next(iter(server.values()))
    for d in (first, again):
        assert (d / "w.npy").read_bytes() == (own / "w.npy").read_bytes()
        assert (d / "facts.json").read_text() == (own / "facts.json").read_text()
    facts = where(own / "facts.json")
    assert facts["threads"] == 2 and facts["root_handlers"] == 0 and facts["var"] == "from the client"
    # unseeded generators start afresh in every child, as in every fresh process
    seeds = {where(d / "where.json")["torch_seed"] for d in (own, first, again)}
    draws = {where(d / "where.json")["numpy_draw"] for d in (own, first, again)}
    assert len(seeds) == 3 and len(draws) == 3


@pytest.mark.parametrize("target, params", [("tests.helpers:zygote_fail", {"n": 7}),
                                            ("tests.helpers:zygote_exit", {"code": 3}),
                                            ("tests.helpers:zygote_reuse_error", {"n": 5})])
def test_a_failing_job_exits_as_in_its_own_process(servers, tmp_path, target, params):
    sm = job([tmp_path / "never"], **params)
    own, _ = servers.run(target, sm, cwd=tmp_path, REUSE_ZYGOTE="0")
    served, client = servers.run(target, sm, cwd=tmp_path)
    assert f"for client {client}: {target}" in servers.log()  # it did go through the server
    assert served.returncode == own.returncode != 0
    if target.endswith("fail"):
        # a traceback (the frames below the stage's caller differ), ending in the same lines
        assert own.stderr.splitlines()[:2] == served.stderr.splitlines()[:2] == \
            ["about to fail", "Traceback (most recent call last):"]
        assert own.stderr.splitlines()[-3:] == served.stderr.splitlines()[-3:]
        assert served.stderr.splitlines()[-1] == "ValueError: boom 7"
    else:
        assert untimed(served.stderr) == untimed(own.stderr)
        assert ("reuse error: nothing to do for 5" in own.stderr) == target.endswith("reuse_error")
    assert served.stdout == own.stdout == ""
    assert not (tmp_path / "never").exists()


def test_job_times_are_recorded_on_request(servers, tmp_path):
    """REUSE_JOB_TIMES (bench/workflow.py): one line per job, through the server or not, ended or failed."""
    times = tmp_path / "times.jsonl"
    for name, env in (("own", {"REUSE_ZYGOTE": "0"}), ("server", {})):
        r, _ = servers.run("tests.helpers:zygote_where", job([tmp_path / f"{name}.json"]), cwd=tmp_path,
                           REUSE_JOB_TIMES=str(times), **env)
        assert r.returncode == 0, r.stderr
        r, _ = servers.run("tests.helpers:zygote_exit", job([tmp_path / "never"], code=3), cwd=tmp_path,
                           REUSE_JOB_TIMES=str(times), **env)
        assert r.returncode == 3, r.stderr
    lines = [json.loads(x) for x in times.read_text().splitlines()]
    assert [(x["forked"], x["status"], Path(x["output"]).name) for x in lines] == [
        (False, ["exit", 0], "own.json"), (False, ["exit", 3], "never"),
        (True, ["exit", 0], "server.json"), (True, ["exit", 3], "never")]
    for x in lines:
        assert x["rule"] == "zygote_test" and x["run"] is None
        assert x["started"] <= x["called"] <= x["ended"] <= time.time()
        assert x["called"] - x["started"] < TIMEOUT


# ----------------------------------------------------------------------------- killing a job
def test_killing_the_client_kills_the_job(servers, tmp_path):
    """SIGKILL of the rule script ends its job's child at once: it never finishes."""
    sm = job({"started": tmp_path / "started", "done": tmp_path / "done"}, sleep=3)
    p = servers.start("tests.helpers:zygote_sleep", sm, cwd=tmp_path)
    deadline = time.monotonic() + TIMEOUT
    while not (tmp_path / "started").exists() or not (tmp_path / "started").read_text():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    child = int((tmp_path / "started").read_text())
    assert child != p.pid
    p.kill()
    p.communicate(timeout=TIMEOUT)
    assert gone(child, within=2.0), f"the job's child {child} outlived its client by 2s"
    time.sleep(3.5)
    assert not (tmp_path / "done").exists()


def test_sigterm_to_the_client_ends_the_job_as_it_would_a_plain_one(servers, tmp_path):
    sm = job({"started": tmp_path / "started", "done": tmp_path / "done"}, sleep=30)
    p = servers.start("tests.helpers:zygote_sleep", sm, cwd=tmp_path)
    deadline = time.monotonic() + TIMEOUT
    while not (tmp_path / "started").exists() or not (tmp_path / "started").read_text():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    child = int((tmp_path / "started").read_text())
    p.terminate()
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGTERM  # the client dies of the signal its job died of
    assert gone(child, within=2.0)
    assert not (tmp_path / "done").exists()


# ----------------------------------------------------------------------------- which server
def test_reuse_zygote_0_never_contacts_a_server(servers, tmp_path):
    nowhere = tmp_path / "no-socket-folder"
    r, client = servers.run("tests.helpers:zygote_where", job([tmp_path / "where.json"]), cwd=tmp_path,
                            REUSE_ZYGOTE="0", REUSE_ZYGOTE_DIR=str(nowhere))
    assert r.returncode == 0, r.stderr
    assert where(tmp_path / "where.json")["pid"] == client
    assert not nowhere.exists()  # the socket folder was never even looked for
    assert r.stderr == ""


def test_a_stale_socket_is_replaced_and_racing_clients_share_one_server(fresh_servers, tmp_path):
    """A socket file nobody listens on (a killed server's) is replaced; two clients that find no
    server at the same moment end up with one between them."""
    s = fresh_servers()
    path = s.socket_path()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    clients = [s.start("tests.helpers:zygote_where", job([tmp_path / f"where{i}.json"]), cwd=tmp_path)
               for i in range(2)]
    for p in clients:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
        assert err == ""
    pids = s.pids()
    assert list(pids) == [path.stem]
    jobs = [where(tmp_path / f"where{i}.json") for i in range(2)]
    assert jobs[0]["ppid"] == jobs[1]["ppid"] == pids[path.stem]
    assert {j["pid"] for j in jobs}.isdisjoint(p.pid for p in clients)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(path))  # a live server listens there now


def test_changed_sources_get_a_new_server(fresh_servers, tmp_path):
    """A client whose ``reuse`` sources changed (here: a copy of the package, one file touched) does
    not use the server that imported the old ones."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "reuse", copy / "reuse", ignore=shutil.ignore_patterns("__pycache__", "_C*.so"))
    for ext in (ROOT / "reuse").glob("_C*.so"):
        (copy / "reuse" / ext.name).symlink_to(ext)
    s = fresh_servers(pythonpath=[copy])
    before = s.socket_path()
    r, _ = s.run("tests.helpers:zygote_where", job([tmp_path / "before.json"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    io_py = copy / "reuse" / "io.py"
    st = io_py.stat()
    os.utime(io_py, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = s.socket_path()
    assert after != before
    r, _ = s.run("tests.helpers:zygote_where", job([tmp_path / "after.json"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pids = s.pids()
    assert where(tmp_path / "before.json")["ppid"] == pids[before.stem]
    assert where(tmp_path / "after.json")["ppid"] == pids[after.stem] != pids[before.stem]


def test_the_key_follows_sources_and_the_environment_read_at_import(tmp_path):
    pkg = tmp_path / "reuse"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("x = 1\n")
    env = {"HOME": "/h", "OMP_NUM_THREADS": "1"}
    key = zygote.server_key(env, pkg)
    assert zygote.server_key(env, pkg) == key
    assert zygote.server_key({**env, "HOME": "/else", "PYTEST_CURRENT_TEST": "x"}, pkg) == key  # not read at import
    assert zygote.server_key({**env, "OMP_NUM_THREADS": "4"}, pkg) != key  # the thread pools' size
    assert zygote.server_key({**env, "REUSE_FORCE_REFERENCE": "1"}, pkg) != key
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"x")
    assert zygote.server_key(env, pkg) == key  # compiled caches are not sources
    (pkg / "sub" / "mod.py").write_text("x = 22\n")
    edited = zygote.server_key(env, pkg)
    assert edited != key
    (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0")  # the compiled extension
    assert zygote.server_key(env, pkg) != edited


def test_the_module_imports_no_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, reuse.zygote; print('torch' in sys.modules)"],
                       capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT)
    assert r.stdout.strip() == "False", r.stderr
