"""The cluster profiles for real, on this machine: the tiny workflow through a single-node SLURM cluster
(tools/slurm_cluster.sh), with S3 as the default storage against a local S3 server (moto), and both.

The SLURM tests need root and Debian's slurm-wlm and munge; they are skipped without them, unless
REUSE_REQUIRE_CLUSTER=1 (CI), which turns the skip into a failure. No test can reach a real cloud
address: the AWS endpoint is the local server, the credentials are dummies and the EC2 metadata
service is off."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = [pytest.mark.workflow, pytest.mark.cluster]
TINY = ROOT / "tests" / "workflow" / "config.yaml"
CLUSTER_SCRIPT = ROOT / "tools" / "slurm_cluster.sh"
BIN = Path(sys.executable).parent
REQUIRE = os.environ.get("REUSE_REQUIRE_CLUSTER") == "1"
RUN_TIMEOUT = 300  # seconds for one Snakemake run (`timeout` kills it, and the test fails)
BUCKET = "reuse-test"


def unavailable(reason: str):
    """Skip, or fail when the cluster tests are required (CI)."""
    if REQUIRE:
        pytest.fail(f"{reason} (REUSE_REQUIRE_CLUSTER=1 requires the cluster tests to run)")
    pytest.skip(reason)


# One variant of every method family, for the S3 run: each reads past runs or caches through its staged
# inputs (distillation: logit caches; data methods: the score table; adversarial recycling: an
# adversarial cache; warm starts: a past checkpoint; soups: the warm runs).
FAMILIES = {"kd1": ("kd", "kd1"), "prune": ("prune", "el2n"), "adv": ("adv", "mix"), "warm": ("warm", "tune"),
            "soup": ("soup", "uniform")}


def trimmed_config(path: Path, families: bool = False) -> Path:
    """The tiny workflow cut to what exercises every kind of job quickly: the data, one seed of two
    baselines (an augmented teacher, a student) with their logit caches, one distillation variant, the
    tables and the report. Taken from the tiny config's shared parts, so it follows that config as it
    changes; every other method section is left out, unless ``families``: then one variant of each
    method family (FAMILIES) runs too."""
    tiny = yaml.safe_load(TINY.read_text())
    cfg = {k: tiny[k] for k in ("results", "device", "progress", "datasets", "models", "train", "cache") if k in tiny}
    teacher = next(m for m, spec in tiny["models"].items() if spec.get("train", {}).get("augment"))
    student = next(m for m in tiny["models"] if m != teacher)
    cfg["models"] = {m: tiny["models"][m] for m in (teacher, student)}
    cfg["baseline"] = {"seeds": [0]}
    cfg["kd"] = {"variants": {"kd1": {"model": student, "teacher": {"model": teacher}, "temperature": 2}}}
    if families:
        cfg["train"] = {**cfg["train"], "example_stats": False}
        cfg["scores"] = {"model": teacher, "runs": 1, "names": ["el2n"]}
        cfg["prune"] = {"variants": {"el2n": {"model": teacher, "score": "el2n", "keep": 0.5}}}
        cfg["adv"] = {"robust": {"kind": "fgsm", "eps": 0.2},
                      "caches": {"fgsm": {"source": {"model": teacher}, "attack": {"kind": "fgsm", "eps": 0.2}}},
                      "variants": {"mix": {"model": teacher, "cache": "fgsm", "ratio": 0.5}}}
        cfg["warm"] = {"variants": {"tune": {"model": student, "from": {"model": student, "seed": 0},
                                             "train": {"epochs": 1}}}}
        cfg["soup"] = {"variants": {"uniform": {"model": student, "ingredients": {"variant": "tune", "runs": 1}}}}
    cfg["report"] = {"figures": []}
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smk(workdir: Path, config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", str(RUN_TIMEOUT), sys.executable, "-m", "snakemake", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})},
                       timeout=RUN_TIMEOUT + 30)
    assert r.returncode != 124, f"snakemake ran past {RUN_TIMEOUT} s and was stopped:\n{r.stderr[-4000:]}"
    return r


def planned_jobs(workdir: Path, config: Path, *args: str, env: dict | None = None) -> dict[str, int]:
    """Rule -> job count of what a run would do (a dry run's 'Job stats')."""
    r = smk(workdir, config, "-n", "--cores", "1", *args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    table = r.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def is_no_op(workdir: Path, config: Path, *args: str, env: dict | None = None) -> bool:
    r = smk(workdir, config, "-n", "--cores", "1", *args, env=env)
    return r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


# --- the SLURM cluster --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM cluster on 127.0.0.1 for this module, stopped at its end."""
    if os.geteuid() != 0:
        unavailable("the SLURM tests start munged, slurmctld and slurmd, which needs root")
    missing = [t for t in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue") if not shutil.which(t)]
    if missing:
        unavailable(f"SLURM is not installed (missing {', '.join(missing)}); as root: apt-get install slurm-wlm munge")
    # One test cluster per machine (tools/slurm_cluster.sh refuses a second): a module that uses it on another
    # xdist worker (--dist loadfile) waits here until the module that holds it has stopped it.
    lock = open(Path(tempfile.gettempdir()) / "reuse-test-slurm.lock", "w")
    deadline = time.monotonic() + 1800
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "another test module held the SLURM test cluster for 30 min"
            time.sleep(1)
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "REUSE_SLURM_DIR": str(state), "REUSE_SLURMCTLD_PORT": str(free_port()),
           "REUSE_SLURMD_PORT": str(free_port())}
    r = subprocess.run(["timeout", "60", "bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True,
                       env=env, timeout=90)
    try:
        assert r.returncode == 0, f"the test cluster did not start:\n{r.stdout}{r.stderr}"
        yield state
    finally:
        subprocess.run(["timeout", "30", "scancel", "--full", "--partition", "main"], capture_output=True,
                       env=env, timeout=60)
        r = subprocess.run(["timeout", "60", "bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True, text=True,
                           env=env, timeout=90)
        lock.close()  # releases the flock
        assert r.returncode == 0, r.stdout + r.stderr


# The profile as a user would run it, with the settings a cluster without slurmdbd needs: squeue for the
# job states (there is no sacct; squeue sees a finished job for MinJobAge=300 s, well above the 3 x 1 s
# the plugin asks for) and no account. The plugin checks 1 s after a submission, then backs off by 10 s
# per check that finds nothing finished (1, 12, 33 s), so short jobs are seen soon after they end.
# Successful jobs' SLURM logs are kept so the test can read them.
TEST_CLUSTER = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                "--slurm-no-account", "--slurm-keep-successful-logs", "--jobs", "4")
SLURM_ARGS = ("--profile", str(ROOT / "profiles" / "slurm"), *TEST_CLUSTER)


def check_ran_under_slurm(workdir: Path, result: subprocess.CompletedProcess, plan: dict[str, int]) -> list[str]:
    """Every planned job (but the local target rule `all`) was an sbatch job that ran its rule; the
    SLURM job ids."""
    log = result.stdout + result.stderr
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log)
    expected = sum(n for rule, n in plan.items() if rule != "all")
    assert len(submitted) == expected, f"{len(submitted)} SLURM jobs for {plan}:\n{log[-4000:]}"
    ids = [slurm_id for _, slurm_id, _ in submitted]
    assert len(set(ids)) == len(ids)
    ran = {}
    for _, slurm_id, path in submitted:
        text = Path(path).read_text()
        assert Path(path).is_relative_to(workdir / ".snakemake" / "slurm_logs") and Path(path).stem == slurm_id
        rule = re.search(r"^(?:local)?rule (\w+):", text, re.M)
        assert rule, f"SLURM log {path} shows no rule:\n{text[-2000:]}"
        ran[rule.group(1)] = ran.get(rule.group(1), 0) + 1
    assert ran == {rule: n for rule, n in plan.items() if rule != "all"}
    return ids


def test_slurm_runs_every_job_as_a_slurm_job(slurm, tmp_path):
    """The trimmed workflow without its KD stage (the S3 test runs that one): data, two baselines, their
    logit caches, the tables and the report, each an sbatch job. Every stage costs the plugin's status
    polling (about 12-33 s), so fewer stages keep the test short."""
    cfg = yaml.safe_load(trimmed_config(tmp_path / "cluster.yaml").read_text())
    del cfg["kd"]
    config = tmp_path / "slurm.yaml"
    config.write_text(yaml.safe_dump(cfg))
    plan = planned_jobs(tmp_path, config)
    assert plan.get("report") == 1 and plan.get("prepare_data") == 1 and "kd__tiny__kd1" not in plan
    t0 = time.time()
    r = smk(tmp_path, config, *SLURM_ARGS)
    assert r.returncode == 0, r.stderr[-4000:]
    ids = check_ran_under_slurm(tmp_path, r, plan)
    print(f"SLURM run: {len(ids)} jobs (SLURM job ids {', '.join(ids)}) in {time.time() - t0:.0f} s")
    res = tmp_path / "results"
    assert (res / "summary.parquet").exists() and (res / "report" / "index.html").exists()
    assert len(list(res.glob("tiny/*/baseline/s0/run.json"))) == 2
    assert not list(res.glob("tiny/*/*/s0/state")) and not list(res.glob("tiny/*/*/*/s0/state"))
    assert is_no_op(tmp_path, config, *SLURM_ARGS)


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def test_requeued_training_resumes_from_its_last_checkpoint(slurm, tmp_path):
    """A training job that SLURM requeues (as on preemption: `scontrol requeue`) runs again under the
    same job id and resumes from state/last.pt, which Snakemake leaves alone (state/ is not an output)."""
    cfg = yaml.safe_load(trimmed_config(tmp_path / "cluster.yaml").read_text())
    student = cfg["kd"]["variants"]["kd1"]["model"]
    cfg["models"] = {student: cfg["models"][student]}
    cfg["train"].update(epochs=60, batch_size=4, checkpoint_epochs=[1])
    del cfg["kd"]
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "results" / "tiny" / student / "baseline" / "s0"
    cmd = ["timeout", "-k", "10", str(RUN_TIMEOUT), sys.executable, "-m", "snakemake", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(config), *SLURM_ARGS,
           str(run.relative_to(tmp_path) / "run.json")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (run / "state" / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.2)
        assert (run / "state" / "last.pt").exists(), "training never wrote its resume state"
        time.sleep(1)
        job = subprocess.run(["squeue", "-h", "-o", "%i %j %k"], capture_output=True, text=True, timeout=30).stdout
        ids = [line.split()[0] for line in job.splitlines() if "train_baseline" in line]
        assert len(ids) == 1, job
        assert not (run / "run.json").exists()
        subprocess.run(["scontrol", "requeue", ids[0]], check=True, timeout=30)
        # A requeued job may start again two minutes after it was stopped; once it is back in the queue,
        # let it start now.
        deadline = time.time() + 60
        while (state := squeue_state(ids[0])) != "RUNNING" and time.time() < deadline:
            if state == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={ids[0]}", "StartTime=now"], capture_output=True,
                               timeout=30)
            time.sleep(0.5)
        assert state == "RUNNING", f"the requeued job {ids[0]} did not start again: {state}"
        out, _ = proc.communicate(timeout=RUN_TIMEOUT + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    # SLURM ran the same job again; Snakemake did not have to submit it twice
    assert re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S+train_baseline", out) == ids, out[-4000:]
    log = (run / "train.log").read_text()
    assert re.search(r"resumed from .*state/last\.pt at epoch [1-9]", log), log[-2000:]
    assert [m["epoch"] for m in map(yaml.safe_load, (run / "metrics.jsonl").read_text().splitlines())] == list(
        range(1, 61))
    assert not (run / "state").exists()
    print(f"requeued SLURM job {ids[0]} resumed: {re.search(r'resumed from .*', log).group(0)}")


# --- S3 storage against a local server ----------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 server (moto) on a free 127.0.0.1 port with an empty bucket; the environment that
    points every AWS client at it (and at nothing else)."""
    server = BIN / "moto_server"
    if not server.exists():
        pytest.fail(f"{server} is missing; install the pinned stack: .venv/bin/pip install -r requirements.txt")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": url,
           "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": url, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, f"moto_server did not start; see {log.name}"
                time.sleep(0.1)
        s3_resource(env).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def s3_resource(env: dict):
    """boto3 in this process, pointed at the local server by ``env`` alone."""
    import boto3

    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                    region_name=env["AWS_DEFAULT_REGION"])
    return session.resource("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


def bucket_keys(env: dict, prefix: str) -> set[str]:
    objects = s3_resource(env).Bucket(BUCKET).objects.filter(Prefix=prefix)
    return {o.key[len(prefix):] for o in objects}


def storage_args(prefix: str) -> tuple[str, ...]:
    return ("--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/{prefix}")


def check_outputs_in_bucket(env: dict, workdir: Path, prefix: str, families: bool = False):
    keys = bucket_keys(env, prefix + "/")
    methods = [m for m, _ in FAMILIES.values()] if families else ["kd"]
    for f in ("results/tiny/data/data.npz", "results/tiny/baselines.csv", *(f"results/tiny/{m}.csv" for m in methods),
              "results/summary.parquet", "results/report/index.html"):
        assert f in keys, f"{f} is not in s3://{BUCKET}/{prefix}/: {sorted(keys)[:40]}"
    variants = "|".join(f"{m}/{v}" for m, v in (FAMILIES.values() if families else [FAMILIES["kd1"]]))
    runs = [k for k in keys if re.fullmatch(rf"results/tiny/\w+/(baseline|{variants})/s0/run\.json", k)]
    assert len(runs) == 2 + (len(FAMILIES) if families else 1), sorted(keys)
    assert any(re.fullmatch(r"results/tiny/\w+/baseline/s0/logits/e\d+/meta\.json", k) for k in keys)
    assert not any("/state/" in k for k in keys)
    assert not (workdir / "results").exists()  # nothing was written outside the storage
    return keys


def test_s3_default_storage_locally(s3, tmp_path):
    """The trimmed workflow with one variant of every method family on S3: every stage reads past runs,
    caches and score tables only through its staged inputs (the bucket's objects, copied to a local
    storage folder), so every run finishes and records them."""
    config = trimmed_config(tmp_path / "cluster.yaml", families=True)
    prefix = "local"
    t0 = time.time()
    r = smk(tmp_path, config, "--cores", "2", *storage_args(prefix), env=s3)
    assert r.returncode == 0, r.stderr[-4000:]
    keys = check_outputs_in_bucket(s3, tmp_path, prefix, families=True)
    assert "results/tiny/adv/fgsm/adv.npz" in keys and "results/tiny/scores.parquet" in keys
    for study in ("prune", "adv", "warm"):
        assert f"results/tiny/studies/{study}.csv" in keys, sorted(keys)
    print(f"S3 run: {len(keys)} objects under s3://{BUCKET}/{prefix}/ in {time.time() - t0:.0f} s")
    assert is_no_op(tmp_path, config, *storage_args(prefix), env=s3)


def test_aws_profile_slurm_jobs_on_s3(slurm, s3, tmp_path):
    """profiles/aws as on an AWS ParallelCluster: the jobs inside SLURM read their inputs from the bucket
    and write their outputs to it, finding the server through the environment alone (the bucket from
    REUSE_S3_PREFIX). A short target (the data, then one baseline run that reads it from the bucket)
    keeps it quick; the local test above runs the whole trimmed workflow on S3."""
    config = trimmed_config(tmp_path / "cluster.yaml")
    student = yaml.safe_load(config.read_text())["kd"]["variants"]["kd1"]["model"]
    prefix = "aws"
    env = {**s3, "REUSE_S3_PREFIX": f"s3://{BUCKET}/{prefix}"}
    args = ("--profile", str(ROOT / "profiles" / "aws"), *TEST_CLUSTER)
    target = f"results/tiny/{student}/baseline/s0/run.json"
    plan = planned_jobs(tmp_path, config, *args, target, env=env)
    assert plan == {"prepare_data": 1, f"train_baseline__tiny__{student}": 1}, plan
    t0 = time.time()
    r = smk(tmp_path, config, *args, target, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    ids = check_ran_under_slurm(tmp_path, r, plan)
    keys = bucket_keys(s3, prefix + "/")
    run = f"results/tiny/{student}/baseline/s0"
    assert {"results/tiny/data/data.npz", "results/tiny/data/dataset.json", f"{run}/run.json", f"{run}/metrics.jsonl",
            f"{run}/predictions.npz", f"{run}/train.log"} <= keys, sorted(keys)
    assert not any("/state/" in k for k in keys), sorted(keys)
    assert not (tmp_path / "results").exists()
    print(f"aws profile (SLURM + S3): {len(ids)} jobs (SLURM job ids {', '.join(ids)}), {len(keys)} objects "
          f"in {time.time() - t0:.0f} s")
    assert is_no_op(tmp_path, config, *args, target, env=env)
