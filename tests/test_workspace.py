"""The workspace as a store that machines exchange stage outputs through: an S3 API on loopback (moto's
server, a test double for AWS) reached by s3fs exactly as a cluster reaches S3. Two "machines" are two
docqa caches, so each has its own mirror and nothing passes between them except through the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from docqa.hashing import tree_digest
from docqa.outputs import BaseModelRef, TrainOutput, describe_base
from docqa.synthesis.serve import free_port
from docqa.workspace import Workspace

URL = "s3://docqa-test/ws"


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    port = free_port("127.0.0.1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket, with the credentials and the endpoint that s3fs reads from the environment."""
    import fsspec

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if fs.exists("docqa-test"):
        fs.rm("docqa-test", recursive=True)
    fs.mkdir("docqa-test")
    return URL


def on_machine(name: str, tmp_path: Path, monkeypatch) -> Workspace:
    monkeypatch.setenv("DOCQA_CACHE_DIR", str(tmp_path / name))
    return Workspace(URL)


def train_output(workspace: Workspace, stage: str = "pretrain", key: str = "0123abcd") -> TrainOutput:
    folder = workspace.local / stage / key
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (folder / "log_history.json").write_text('[{"step": 2, "loss": 3.1}]')
    return TrainOutput.from_metrics(
        folder,
        tree_digest(folder),
        {"trainable_parameters": 8, "steps": 2, "train_tokens": 64, "train_loss": 3.1, "eval_loss": None,
         "seconds": 0.5},
    )  # fmt: skip


def test_a_stage_output_travels_to_another_machine_and_back(s3, tmp_path, monkeypatch):
    cpu = on_machine("cpu", tmp_path, monkeypatch)
    output = train_output(cpu)

    shared = cpu.share(output)
    assert shared.path == f"{URL}/pretrain/0123abcd"
    assert shared.adapter_path == f"{URL}/pretrain/0123abcd/adapter"
    assert shared.digest == output.digest and shared.steps == 2

    gpu = on_machine("gpu", tmp_path, monkeypatch)
    assert gpu.local != cpu.local
    fetched = gpu.fetch(shared)
    assert Path(fetched.path) == gpu.local / "pretrain" / "0123abcd"
    assert Path(fetched.adapter_path) == Path(fetched.path) / "adapter"
    assert tree_digest(Path(fetched.path)) == output.digest  # every file, byte for byte
    assert gpu.fetch(fetched) == fetched  # a local path is left as it is

    # the GPU machine's result goes back the same way, to a mirror that never had it
    result = gpu.share(train_output(gpu, "sft", "4567cdef"))
    back = on_machine("cpu", tmp_path, monkeypatch).fetch(result)
    assert tree_digest(Path(back.path)) == result.digest
    assert Path(back.path).is_relative_to(cpu.local)


def test_a_folder_goes_to_the_store_once(s3, tmp_path, monkeypatch):
    cpu = on_machine("cpu", tmp_path, monkeypatch)
    output = train_output(cpu)
    shared = cpu.share(output)
    fs = cpu._store[0]

    def no_upload(*args, **kwargs):
        raise AssertionError("uploaded a folder that was already on the store")

    monkeypatch.setattr(fs, "put", no_upload)
    assert cpu.share(output) == shared


def test_a_folder_whose_upload_was_cut_short_is_refused(s3, tmp_path, monkeypatch):
    cpu = on_machine("cpu", tmp_path, monkeypatch)
    output = train_output(cpu)
    fs, root = cpu._store
    fs.put(f"{output.path}/", f"{root}/pretrain/0123abcd/", recursive=True)  # files, but no marker
    stranded = output.model_copy(update={"path": f"{URL}/pretrain/0123abcd"})

    gpu = on_machine("gpu", tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError, match="not completely on the workspace store"):
        gpu.fetch(stranded)
    assert not (gpu.local / "pretrain" / "0123abcd").exists()


def test_the_base_model_travels_too_and_a_hub_id_stays(s3, tmp_path, monkeypatch):
    base_dir = tmp_path / "models" / "tiny-llama"
    base_dir.mkdir(parents=True)
    (base_dir / "config.json").write_text('{"model_type": "llama"}')
    (base_dir / "tokenizer.json").write_text('{"version": "1.0"}')
    base = describe_base(str(base_dir), source="bootstrap")

    cpu = on_machine("cpu", tmp_path, monkeypatch)
    shared = cpu.share(base)
    assert shared.path == f"{URL}/imported/{base.digest[:16]}/tiny-llama"
    fetched = on_machine("gpu", tmp_path, monkeypatch).fetch(shared)
    assert describe_base(fetched.path, source="bootstrap").digest == base.digest

    hub = BaseModelRef(path="meta-llama/Llama-2-7b-hf", digest="d", tokenizer_digest="d", source="hub")
    assert cpu.share(hub) == hub and cpu.fetch(hub) == hub


def test_records_are_read_from_the_store_by_every_machine(s3, tmp_path, monkeypatch):
    cpu = on_machine("cpu", tmp_path, monkeypatch)
    cpu.write_record("stage-results/run-1.json", {"stage": "sft", "cached": False})
    gpu = on_machine("gpu", tmp_path, monkeypatch)
    assert gpu.read_record("stage-results/run-1.json") == {"stage": "sft", "cached": False}
    assert gpu.read_record("stage-results/run-2.json") is None


def test_a_local_workspace_is_its_own_store(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    assert not workspace.remote and workspace.local == (tmp_path / "ws").resolve()
    output = train_output(workspace)
    assert workspace.share(output) == output and workspace.fetch(output) == output
    workspace.write_record("state/trained-x.json", {"a": 1})
    assert workspace.read_record("state/trained-x.json") == {"a": 1}
    assert (workspace.local / "state" / "trained-x.json").is_file()
    assert workspace.read_record("state/none.json") is None


# --- one run at a time -----------------------------------------------------------------------------------


def test_a_held_workspace_refuses_a_second_run_and_says_who_holds_it(tmp_path):
    from docqa.workspace import WorkspaceBusy, workspace_lock

    with (
        workspace_lock(tmp_path, {"flow run": "first-run", "pid": 4242}),
        pytest.raises(WorkspaceBusy, match=r"in use by another docqa run \(flow run first-run, pid 4242\)"),
        workspace_lock(tmp_path, {"flow run": "second-run"}),
    ):
        pass
    with workspace_lock(tmp_path, {"flow run": "third-run"}):  # released when the first ended
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from pathlib import Path; from docqa.workspace import "
         f"workspace_lock; cm = workspace_lock(Path({str(tmp_path)!r}), {{'flow run': 'killed'}}); "
         "cm.__enter__(); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    from docqa.workspace import WorkspaceBusy, workspace_lock

    with pytest.raises(WorkspaceBusy, match="flow run killed"), workspace_lock(tmp_path, {}):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with workspace_lock(tmp_path, {"flow run": "next"}):  # the OS released the dead process's lock
        pass
