"""Operations end to end, against real servers on loopback: ``prefect server start`` and ``mlflow server``
(SQLite), ``docqa deploy`` (process pools named as in production), a CPU and a GPU-pool worker. The
pipeline deployment is run through the API as the UI's "Run" button does; then a new PDF lands in the
watched folder, the watcher deployment announces it, and the pipeline deployment's trigger re-trains
on its own. Checked: both runs complete, the second re-synthesises only the new document's chunks, the
registry holds two versions, and the champion alias follows the gate's verdict.

The workspace is an S3 bucket (moto's server: a test double for AWS's API) and the two workers have
separate docqa caches, as two machines would: stage outputs and the base model pass between them
only through the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import tiny_recipe, write_topic_documents
from pdf_factory import write_report_pdf
from tenacity import retry, retry_if_result, stop_after_attempt, wait_exponential

from docqa.synthesis.serve import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# the new PDF trains; the held-out set stays put, so the gate compares like with like
# (and as little training and scoring as still exercises every stage: each flow run is a new process)
BUCKET = "docqa-it"
WORKSPACE = f"s3://{BUCKET}/workspace"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
RECIPE = tiny_recipe(
    split={"eval_documents": ["names.txt"], "eval_fraction": 0.01},
    pretrain={"max_steps": 2, "eval_steps": 100, "save_steps": 100},
    sft={"max_steps": 2, "eval_steps": 100, "save_steps": 100},
    evaluate={
        "max_questions": 4,
        "max_ppl_tokens": 400,
        "max_general_tokens": 400,
        "max_new_tokens": 8,
        "open_book": False,
    },
    registry={"min_knowledge_gain": -1.0},  # the tiny model teaches nothing measurable: compare anyway
).model_copy(update={"name": "integration"})


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s:\n{log.read_text()[-3000:]}")


class Servers:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.processes = root, env, []

    def start(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                command, env={**self.env, **env}, stdout=sink, stderr=subprocess.STDOUT, cwd=self.root
            )
        self.processes.append((process, log))
        return process

    def stop(self) -> None:
        for process, _ in reversed(self.processes):
            process.terminate()
        for process, _ in self.processes:
            try:
                process.wait(timeout=5)  # graceful shutdown is not under test here
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_base) -> Iterator[dict]:
    """Prefect and MLflow servers, pools and deployments applied by ``docqa deploy``, two workers."""
    root = tmp_path_factory.mktemp("cluster")
    prefect_port, mlflow_port, s3_port = (free_port("127.0.0.1") for _ in range(3))
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",  # a 503's cause in prefect-server.log
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        **S3_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
    }
    servers = Servers(root, env)
    prefect = servers.start(
        "prefect-server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
    )
    mlflow = servers.start(
        "mlflow-server",
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "mlartifacts"), "--workers", "1",
         "--allowed-hosts", f"127.0.0.1:{mlflow_port},localhost:{mlflow_port}"],
    )  # fmt: skip
    s3 = servers.start("s3-server", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
    try:
        wait_for(f"{api}/health", prefect, root / "prefect-server.log")
        wait_for(f"http://127.0.0.1:{mlflow_port}/health", mlflow, root / "mlflow-server.log")
        wait_for(f"{env['AWS_ENDPOINT_URL']}/moto-api/", s3, root / "s3-server.log")
        store = s3_store(env["AWS_ENDPOINT_URL"])
        store.mkdir(BUCKET)
        docs = write_topic_documents(root / "watched")
        recipe = root / "integration.yaml"
        recipe.write_text(yaml.safe_dump(RECIPE.model_dump(mode="json")))
        deployed = subprocess.run(
            [str(BIN / "docqa"), "deploy", "--docs", str(docs), "--workspace", WORKSPACE,
             "--recipe", str(recipe), "--debounce-s", "1", "--watch-cron", "0 0 1 1 *"],
            env=env, capture_output=True, text=True, cwd=root,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        # the CPU worker shares the session's docqa cache (the tiny base is built there); the GPU
        # worker, standing for another machine, has a cache of its own
        servers.start("worker-cpu", [str(BIN / "prefect"), "worker", "start", "--pool", "docqa-cpu"])
        servers.start("worker-gpu", [str(BIN / "prefect"), "worker", "start", "--pool", "docqa-gpu"],
                      DOCQA_CACHE_DIR=str(root / "gpu-machine-cache"))  # fmt: skip
        yield {"api": api, "docs": docs, "store": store, "root": root,
               "mlflow": env["MLFLOW_TRACKING_URI"], "deploy_output": deployed.stdout}  # fmt: skip
    finally:
        servers.stop()


@retry(
    retry=retry_if_result(lambda response: response.status_code == 503),
    stop=stop_after_attempt(6),
    wait=wait_exponential(multiplier=0.5, max=8),
    retry_error_callback=lambda state: state.outcome.result(),
)
def _request(method: str, url: str, **kwargs) -> httpx.Response:
    return httpx.request(method, url, timeout=30, **kwargs)


def api_call(method: str, url: str, **kwargs) -> Any:
    """A Prefect API call, retried on 503 as Prefect's own client does: the server answers 503 to errors
    worth retrying, such as SQLite being busy while workers write."""
    return _request(method, url, **kwargs).raise_for_status().json()


def deployment_id(api: str, name: str) -> str:
    return api_call("GET", f"{api}/deployments/name/{name}")["id"]


def run_deployment_as_ui(api: str, name: str) -> str:
    """What the UI's "Run" does: create a flow run of the deployment with its default parameters."""
    return api_call("POST", f"{api}/deployments/{deployment_id(api, name)}/create_flow_run", json={})["id"]


def wait_terminal(api: str, flow_run_id: str, root: Path, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = api_call("GET", f"{api}/flow_runs/{flow_run_id}")
        if run["state_type"] in TERMINAL:
            return run
        time.sleep(1)
    logs = "\n".join(p.read_text()[-2000:] for p in root.glob("worker-*.log"))
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout_s}s; workers:\n{logs}")


def pipeline_runs(api: str) -> list[dict]:
    query = {"deployments": {"id": {"any_": [deployment_id(api, "docqa-pipeline/docqa-pipeline")]}}}
    return api_call("POST", f"{api}/flow_runs/filter", json=query)


def s3_store(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(
        key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=endpoint,
        skip_instance_cache=True,
    )


def report_of(store, flow_run: dict) -> dict:
    """The run's report, read from the workspace's bucket (where every machine reads it)."""
    store.invalidate_cache()
    return json.loads(store.cat_file(f"{WORKSPACE}/reports/{flow_run['name']}.json"))


def test_deploy_run_watch_retrain_and_promote(cluster):
    from mlflow.tracking import MlflowClient

    api, store, root = cluster["api"], cluster["store"], cluster["root"]
    assert "docqa-pretrain/docqa-pretrain → docqa-gpu" in cluster["deploy_output"]

    first_id = run_deployment_as_ui(api, "docqa-pipeline/docqa-pipeline")
    first_run = wait_terminal(api, first_id, root)
    assert first_run["state_type"] == "COMPLETED", first_run["state"]
    first = report_of(store, first_run)
    # the GPU stages ran as flow runs of their deployments, children of the pipeline run
    children = api_call(
        "POST", f"{api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [first_id]}}}
    )
    assert len(children) >= 3

    (cluster["docs"] / "inspection-report.pdf").parent.mkdir(exist_ok=True)
    write_report_pdf(cluster["docs"] / "inspection-report.pdf", pages=3)
    watch_run = wait_terminal(
        api, run_deployment_as_ui(api, "docqa-watch-documents/docqa-watch-documents"), root
    )
    assert watch_run["state_type"] == "COMPLETED", watch_run["state"]

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the trigger's run: created by the automation, not by us
        triggered = [r for r in pipeline_runs(api) if r["id"] != first_id]
        if triggered and triggered[0]["state_type"] in TERMINAL:
            break
        time.sleep(2)
    assert len(triggered) == 1, [r["name"] for r in triggered]
    assert triggered[0]["state_type"] == "COMPLETED", triggered[0]["state"]
    second = report_of(store, triggered[0])

    new = next(d for d in second["documents"] if d["path"].endswith("inspection-report.pdf"))
    assert second["documents_changed"]["added"] == ["inspection-report.pdf"]
    assert second["counts"]["synthesis_requests"] == new["chunks"] > 0  # only the new document's chunks
    assert second["stages"]["ingest"]["figures"]["extracted_now"] == 1

    client = MlflowClient(cluster["mlflow"])
    versions = client.search_model_versions("name = 'docqa-integration'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = client.get_model_version_by_alias("docqa-integration", "champion")
    verdict = second["registry"]["verdict"]
    expected = "2" if verdict["alias"] == "champion" else first["registry"]["version"]
    assert first["registry"]["alias"] == "champion" or not first["evaluation"]["forgetting"]["passed"]
    if first["registry"]["alias"] == "champion" or verdict["alias"] == "champion":
        assert str(champion.version) == expected
    # compared with the champion on the same questions (scored again when the new document's knowledge
    # questions changed them)
    assert (verdict["compared_on"] != "none") == (first["registry"]["alias"] == "champion")
    assert second["registry"]["data_diff"]["documents_added"] == [new["path"]]

    # the GPU machine trained on what it fetched from the bucket, the base model included, and handed
    # its outputs back the same way
    (mirror,) = (root / "gpu-machine-cache" / "workspaces").iterdir()
    assert {"pretrain", "sft", "evaluate"} <= {p.name for p in mirror.iterdir()}
    assert not (root / "gpu-machine-cache" / "bases").exists()
    store.invalidate_cache()
    assert store.glob(f"{WORKSPACE}/imported/*/*/config.json")
    assert Path(first["outputs"]["model_package"]).is_dir()  # packaged on the CPU side from fetched outputs
