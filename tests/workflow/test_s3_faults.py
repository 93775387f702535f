"""S3 uploads that fail: the workflow's outputs go to a local S3 server (moto, the `s3` fixture of
test_cluster.py) through a proxy that forwards every request and breaks chosen uploads: it reads part of
the request body and drops the connection without answering, as a network failure mid-upload does. The
proxy records every request, so a test can check what the bucket held whenever a job read an object.

- An upload that fails once is retried (the S3 plugin's boto3 client, `retries` attempts in its standard
  retry mode) and the run finishes; the object is complete and every read of it returns those bytes.
- An upload that fails every time fails the job with an error naming the object; Snakemake removes the
  job's outputs that did reach the bucket, and the next run runs the job again and uploads them.
- A multipart upload (outputs of 8 MB or more) whose parts fail is aborted: no object, no unfinished
  upload; a part that fails once is sent again.
- With profiles/aws through the SLURM test cluster, an upload that fails on all of boto3's attempts
  fails the SLURM job, and Snakemake's job retry (profile `retries`) runs it again and uploads it.
"""

from __future__ import annotations

import hashlib
import io
import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT
from tests.workflow.test_cluster import (  # noqa: F401  (s3 and slurm are fixtures)
    BUCKET,
    TEST_CLUSTER,
    bucket_keys,
    planned_jobs,
    s3,
    s3_resource,
    slurm,
    smk,
    storage_args,
    trimmed_config,
)

pytestmark = [pytest.mark.workflow, pytest.mark.cluster]
# boto3 retries each S3 request this many times (the S3 plugin's `retries`: its default, set in profiles/aws)
S3_RETRIES = yaml.safe_load((ROOT / "profiles" / "aws" / "config.yaml").read_text())["storage-s3-retries"]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "expect"}


@dataclass
class Request:
    method: str
    key: str  # the object key (without the bucket), "" for bucket-level requests
    query: str
    status: int | None  # None: the proxy dropped the connection
    sha256: str | None  # of the request body (PUT) or of the response body (GET)
    time: float


class FaultyS3:
    """A proxy in front of the S3 server: forwards requests, records them, and drops the connection of
    the PUTs (PutObject, UploadPart) whose key matches a registered pattern, a given number of times
    (None: every time)."""

    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        self.requests: list[Request] = []
        self.faults: dict[str, int | None] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                assert "chunked" not in self.headers.get("Transfer-Encoding", ""), "chunked upload"
                path, _, query = self.path.partition("?")
                parts = unquote(path).lstrip("/").split("/", 1)
                key = parts[1] if len(parts) > 1 and parts[0] == BUCKET else ""
                if self.command == "PUT" and key and proxy.take_fault(key):
                    # part of the body arrives, then the connection breaks: no answer
                    partial = self.rfile.read(length // 2)
                    proxy.record(self.command, key, query, None, hashlib.sha256(partial).hexdigest())
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    resp_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                finally:
                    conn.close()
                digest = hashlib.sha256(body if self.command == "PUT" else data).hexdigest()
                proxy.record(self.command, key, query, resp.status, digest)
                self.send_response(resp.status)
                for k, v in resp_headers:
                    if self.command != "HEAD" and k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail(self, pattern: str, times: int | None = 1):
        """Break the next ``times`` uploads (None: all) of the keys that fully match ``pattern``."""
        with self.lock:
            self.faults[pattern] = times

    def clear(self):
        with self.lock:
            self.faults.clear()

    def take_fault(self, key: str) -> bool:
        with self.lock:
            for pattern, left in self.faults.items():
                if re.fullmatch(pattern, key) and (left is None or left > 0):
                    if left is not None:
                        self.faults[pattern] = left - 1
                    return True
        return False

    def record(self, method, key, query, status, digest):
        with self.lock:
            self.requests.append(Request(method, key, query, status, digest, time.time()))

    def of(self, key: str) -> list[Request]:
        """The requests on one object (uploads, reads, existence checks), in order."""
        with self.lock:
            return [r for r in self.requests if r.key == key]


@pytest.fixture(scope="module")
def faulty_s3(s3):  # noqa: F811
    """The S3 server behind a fault-injecting proxy; its ``env`` points the runs at the proxy (the `s3`
    fixture's environment points at the server itself, for checking the bucket)."""
    proxy = FaultyS3(s3["AWS_ENDPOINT_URL"])
    proxy.env = {**s3, "AWS_ENDPOINT_URL": proxy.url, "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": proxy.url}
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def object_bytes(env: dict, key: str) -> bytes:
    return s3_resource(env).Object(BUCKET, key).get()["Body"].read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def student_config(tmp_path: Path) -> tuple[Path, str]:
    """The trimmed workflow cut to the data, one baseline (the student) and the baseline table."""
    cfg = yaml.safe_load(trimmed_config(tmp_path / "cluster.yaml").read_text())
    student = cfg["kd"]["variants"]["kd1"]["model"]
    cfg["models"] = {student: cfg["models"][student]}
    del cfg["kd"]
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config, student


def check_upload_retried(proxy: FaultyS3, env: dict, key: str, local: Path | None = None, dropped: int = 1) -> bytes:
    """``key`` was uploaded ``dropped`` times with its connection dropped, then in full (once, or again
    with the same bytes: under profiles/aws the SLURM job uploads its outputs and the main Snakemake
    process uploads its local copies again); the bucket holds that full upload (and the local file's
    bytes), and nothing found the object before it was complete or read other bytes than those."""
    reqs = proxy.of(key)
    puts = [r for r in reqs if r.method == "PUT"]
    statuses = [r.status for r in puts]
    assert statuses[:dropped] == [None] * dropped and statuses[dropped:] and set(statuses[dropped:]) == {200}, reqs
    done = puts[dropped]
    data = object_bytes(env, key)
    assert {p.sha256 for p in puts[dropped:]} == {sha(data)} and all(p.sha256 != done.sha256 for p in puts[:dropped])
    if local is not None:
        assert local.read_bytes() == data
    for r in reqs:
        if r.method == "GET" and r.status in (200, 206):  # a download: one range of a small object
            assert r.time > done.time and r.sha256 == done.sha256, reqs
        if r.method in ("GET", "HEAD") and r.time < done.time:
            assert r.status == 404, f"{key} was found before it was uploaded: {reqs}"
    return data


def test_s3_upload_that_fails_once_is_retried(s3, faulty_s3, tmp_path):  # noqa: F811
    """The first upload of the data and of a baseline's run.json breaks off mid-body; boto3 uploads each
    again, the run finishes, and the objects are complete. A second run in a fresh checkout reads the
    run from the bucket (it has no local copies) and gets the complete object."""
    proxy = faulty_s3
    config, student = student_config(tmp_path)
    prefix = "fails-once"
    run = f"results/tiny/{student}/baseline/s0"
    data_key, run_key = f"{prefix}/results/tiny/data/data.npz", f"{prefix}/{run}/run.json"
    proxy.fail(re.escape(data_key), 1)
    proxy.fail(re.escape(run_key), 1)
    t0 = time.time()
    r = smk(tmp_path, config, "--cores", "1", "--keep-storage-local-copies", *storage_args(prefix),
            f"{run}/run.json", env=proxy.env)
    assert r.returncode == 0, r.stderr[-4000:]
    local = tmp_path / ".snakemake" / "storage" / "s3" / BUCKET
    data = check_upload_retried(proxy, s3, data_key, local / data_key)
    with np.load(io.BytesIO(data)) as npz:
        assert npz.files
    assert json.loads(check_upload_retried(proxy, s3, run_key, local / run_key))
    # a downstream job elsewhere reads the run from the bucket
    second = tmp_path / "second"
    second.mkdir()
    r = smk(second, config, "--cores", "1", *storage_args(prefix), "results/tiny/baselines.csv", env=proxy.env)
    assert r.returncode == 0, r.stderr[-4000:]
    reads = [q for q in proxy.of(run_key) if q.method == "GET" and q.status in (200, 206)]
    assert reads, f"the second run did not read {run_key} from the bucket: {proxy.of(run_key)}"
    check_upload_retried(proxy, s3, run_key)
    assert "results/tiny/baselines.csv" in bucket_keys(s3, prefix + "/")
    print(f"uploads retried after a dropped connection ({data_key}, {run_key}); {len(reads)} read(s) of the run "
          f"got the full object; {time.time() - t0:.0f} s")


def test_s3_upload_that_always_fails_fails_the_job_and_the_next_run_uploads(s3, faulty_s3, tmp_path):  # noqa: F811
    """Every upload of a baseline's run.json breaks off: the training job fails with an error naming the
    object, and none of its outputs stays in the bucket (Snakemake removes those that did reach it, so
    nothing half-present looks finished). The next run runs that job again (not the data's) and uploads
    them all."""
    proxy = faulty_s3
    config, student = student_config(tmp_path)
    prefix = "fails-always"
    run = f"results/tiny/{student}/baseline/s0"
    run_key = f"{prefix}/{run}/run.json"
    proxy.fail(re.escape(run_key), None)
    t0 = time.time()
    try:
        r = smk(tmp_path, config, "--cores", "1", *storage_args(prefix), f"{run}/run.json", env=proxy.env)
    finally:
        proxy.clear()
    assert r.returncode != 0
    log = r.stdout + r.stderr
    assert f"Failed to store output in storage s3://{BUCKET}/{run_key}" in log, log[-4000:]
    puts = [q.status for q in proxy.of(run_key) if q.method == "PUT"]
    assert puts == [None] * (1 + S3_RETRIES), puts  # the first try and the plugin's retries
    keys = bucket_keys(s3, prefix + "/")
    # the outputs are gone; the failed job's log is kept, as for any failed job
    assert "results/tiny/data/data.npz" in keys and [k for k in keys if k.startswith(run + "/")] == [
        f"{run}/train.log"], sorted(keys)
    # the job's other outputs reached the bucket before run.json failed, and were removed again
    uploaded = {q.key for q in proxy.requests
                if q.method == "PUT" and q.status == 200 and q.key.startswith(f"{prefix}/{run}/")
                and not q.key.endswith(".log")}
    assert any(k.endswith("metrics.jsonl") for k in uploaded), uploaded
    deleted = {q.key for q in proxy.requests if q.method == "DELETE" and q.status == 204}
    assert uploaded <= deleted, (uploaded, deleted)
    assert planned_jobs(tmp_path, config, *storage_args(prefix), f"{run}/run.json", env=proxy.env) == {
        f"train_baseline__tiny__{student}": 1}
    r = smk(tmp_path, config, "--cores", "1", *storage_args(prefix), f"{run}/run.json", env=proxy.env)
    assert r.returncode == 0, r.stderr[-4000:]
    keys = bucket_keys(s3, prefix + "/")
    assert {f"{run}/run.json", f"{run}/metrics.jsonl", f"{run}/predictions.npz"} <= keys, sorted(keys)
    assert json.loads(object_bytes(s3, run_key))
    print(f"upload failing every time: the job failed, its outputs were removed, the next run uploaded them; "
          f"{time.time() - t0:.0f} s")


def test_s3_plugin_multipart_upload_retries_and_leaves_nothing_partial(s3, faulty_s3, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    """Outputs of 8 MB or more (checkpoints of larger models) go up as multipart uploads, part by part. A
    part that fails once is sent again and the object is complete; parts that fail every time make the
    upload fail, and the plugin's client aborts it: no object, and no unfinished upload left in the
    bucket. Through the S3 plugin's own storage object, as Snakemake calls it."""
    import asyncio
    import logging

    proxy = faulty_s3
    for k, v in {**proxy.env, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                 "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}.items():
        monkeypatch.setenv(k, v)  # restored after the test (the plugin sets the last two on import)
    from snakemake_interface_common.exceptions import WorkflowError
    from snakemake_storage_plugin_s3 import StorageProvider, StorageProviderSettings

    settings = StorageProviderSettings(endpoint_url=proxy.url, access_key=s3["AWS_ACCESS_KEY_ID"],
                                       secret_key=s3["AWS_SECRET_ACCESS_KEY"])
    assert settings.retries == S3_RETRIES
    provider = StorageProvider(local_prefix=tmp_path / "storage", logger=logging.getLogger("s3-faults"),
                               settings=settings)
    payload = np.random.default_rng(0).bytes(9 * 2**20)  # 2 parts of at most 8 MiB

    def store(key: str):
        obj = provider.object(f"s3://{BUCKET}/{key}")
        obj.local_path().parent.mkdir(parents=True, exist_ok=True)
        obj.local_path().write_bytes(payload)
        asyncio.run(obj.managed_store())

    client = s3_resource(s3).meta.client
    key = "multipart/once/e10.pt"
    proxy.fail(re.escape(key), 1)
    store(key)
    parts = [q for q in proxy.of(key) if q.method == "PUT"]
    assert len(parts) == 3 and all("partNumber=" in q.query and "uploadId=" in q.query for q in parts)
    assert [q.status for q in parts].count(None) == 1  # one part dropped, sent again
    assert object_bytes(s3, key) == payload
    assert not client.list_multipart_uploads(Bucket=BUCKET, Prefix="multipart/").get("Uploads")

    key = "multipart/always/e10.pt"
    proxy.fail(re.escape(key), None)
    try:
        with pytest.raises(WorkflowError, match=re.escape(f"Failed to store output in storage s3://{BUCKET}/{key}")):
            store(key)
    finally:
        proxy.clear()
    assert {q.status for q in proxy.of(key) if q.method == "PUT"} == {None}
    assert any(q.method == "DELETE" and "uploadId=" in q.query for q in proxy.of(key))  # AbortMultipartUpload
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix=key)
    assert not client.list_multipart_uploads(Bucket=BUCKET, Prefix="multipart/").get("Uploads")
    store(key)  # the next try uploads it whole
    assert object_bytes(s3, key) == payload


def test_aws_profile_retries_the_job_when_the_upload_keeps_failing(slurm, s3, faulty_s3, tmp_path):  # noqa: F811
    """profiles/aws through the SLURM test cluster: every try of the first training job's run.json upload
    breaks off (the first try and the plugin's 5 retries, inside the SLURM job), so that job fails;
    Snakemake removes its outputs from the bucket and submits it again (the profile's `retries`), and the
    second SLURM job uploads them."""
    proxy = faulty_s3
    config, student = student_config(tmp_path)
    prefix = "aws-faults"
    env = {**proxy.env, "REUSE_S3_PREFIX": f"s3://{BUCKET}/{prefix}"}
    args = ("--profile", str(ROOT / "profiles" / "aws"), *TEST_CLUSTER)
    run = f"results/tiny/{student}/baseline/s0"
    run_key, metrics_key = f"{prefix}/{run}/run.json", f"{prefix}/{run}/metrics.jsonl"
    proxy.fail(re.escape(run_key), 1 + S3_RETRIES)
    t0 = time.time()
    try:
        r = smk(tmp_path, config, *args, f"{run}/run.json", env=env)
    finally:
        proxy.clear()
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    jobs = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S+train_baseline", log)
    assert len(jobs) == 2 and "Trying to restart job" in log, log[-4000:]
    check_upload_retried(proxy, s3, run_key, dropped=1 + S3_RETRIES)
    # between the two SLURM jobs, the first one's metrics (uploaded before run.json failed) left the bucket
    puts = [q for q in proxy.of(run_key) if q.method == "PUT"]
    dropped, done = puts[S3_RETRIES].time, puts[1 + S3_RETRIES].time
    m = [q for q in proxy.of(metrics_key) if q.method in ("PUT", "DELETE")]
    first = [q for q in m if q.time < dropped]
    assert first and {(q.method, q.status) for q in first} == {("PUT", 200)}, m
    removed = [q for q in m if dropped < q.time < done]
    assert [(q.method, q.status) for q in removed][:1] == [("DELETE", 204)], m
    assert m[-1].method == "PUT" and m[-1].status == 200 and m[-1].time > removed[0].time, m
    keys = bucket_keys(s3, prefix + "/")
    assert {f"{run}/run.json", f"{run}/metrics.jsonl", f"{run}/predictions.npz"} <= keys, sorted(keys)
    print(f"aws profile: the upload failed {1 + S3_RETRIES} times in SLURM job {jobs[0]}, SLURM job {jobs[1]} "
          f"uploaded it; PUTs of run.json: {[q.status for q in puts]}, of metrics.jsonl: "
          f"{[(q.method, q.status) for q in m]}; {time.time() - t0:.0f} s")
