"""The container stack, checked without a Docker engine or network.

docker/compose.yaml is validated against the official Compose Specification JSON schema, which
check-jsonschema ships inside its wheel (vendored from compose-spec/compose-spec); the other tests
check the wiring the schema cannot see: health-gated dependencies, the GPU reservation, the hosts
MLflow answers, the shared workspace and the images' build steps.
"""

from __future__ import annotations

import ast
import copy
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
# the project, editable, with s3fs (the `s3` extra) so that workers reach an s3:// workspace
PROJECT_INSTALL = r'pip install -c \S+ -e "\.\[s3\]"( |$)'


def deploy_constants() -> dict[str, str]:
    """deployments/deploy.py's module-level string constants, read without importing Prefect."""
    constants = {}
    for node in ast.parse((ROOT / "deployments" / "deploy.py").read_text()).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant | ast.Tuple):
            continue
        target = node.targets[0]
        names = [e.id for e in target.elts] if isinstance(target, ast.Tuple) else [target.id]
        value = ast.literal_eval(node.value)
        constants.update(zip(names, value if isinstance(value, tuple) else (value,), strict=True))
    return constants


DEPLOY = deploy_constants()
WORKERS = {"cpu-worker": DEPLOY["CPU_POOL"], "gpu-worker": DEPLOY["GPU_POOL"]}
WORKSPACE = f"{DEPLOY['CONTAINER_WORKDIR']}/workspace"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = get_builtin_schema("vendor.compose-spec")
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(validator: jsonschema.protocols.Validator, document: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def argv(service: dict) -> list[str]:
    """The command line a service runs: its entrypoint followed by its command."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += shlex.split(value) if isinstance(value, str) else value
    return parts


def option(arguments: list[str], name: str) -> str:
    assert name in arguments, f"{name} missing from {arguments}"
    return arguments[arguments.index(name) + 1]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_compose_file_follows_the_compose_specification(compose, compose_validator):
    assert "version" not in compose, "the Compose Specification has no version key"
    assert schema_errors(compose_validator, compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.update(workers={"cpu": 1}), id="unknown-top-level-key"),
        pytest.param(
            lambda c: c["services"]["gpu-worker"]["deploy"]["resources"]["reservations"].update(
                devices={"driver": "nvidia", "capabilities": ["gpu"]}
            ),
            id="devices-not-a-list",
        ),
        pytest.param(
            lambda c: c["services"]["cpu-worker"]["depends_on"]["prefect-server"].update(
                condition="service_healty"
            ),
            id="misspelt-depends-on-condition",
        ),
        pytest.param(
            lambda c: c["services"]["mlflow"].update(healthcheck={"interval": 15}), id="bare-seconds"
        ),
    ],
)
def test_the_schema_rejects_a_broken_copy(compose, compose_validator, breakage):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert schema_errors(compose_validator, broken), "the validator accepted a broken compose file"


def test_every_service_waited_on_as_healthy_has_a_healthcheck(compose):
    services = compose["services"]
    gated = {
        (name, dependency)
        for name, service in services.items()
        for dependency, how in service.get("depends_on", {}).items()
        if how["condition"] == "service_healthy"
    }
    assert {dependency for _, dependency in gated} >= {"postgres", "redis", "prefect-server", "mlflow"}
    for name, dependency in gated:
        assert dependency in services, f"{name} waits on a service that does not exist: {dependency}"
        assert services[dependency].get("healthcheck", {}).get("test"), f"{dependency} has no healthcheck"


def test_gpu_worker_reserves_nvidia_gpus_and_shared_memory(compose):
    gpu_worker = compose["services"]["gpu-worker"]
    devices = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert re.fullmatch(r"\d+gb?", str(gpu_worker["shm_size"]).lower())
    assert "deploy" not in compose["services"]["cpu-worker"]


def test_workers_poll_their_pools_on_the_prefect_server(compose):
    services = compose["services"]
    server_port = option(argv(services["prefect-server"]), "--port")
    for name, pool in WORKERS.items():
        arguments = argv(services[name])
        assert arguments[:3] == ["prefect", "worker", "start"]
        assert option(arguments, "--pool") == pool
        api = urlparse(services[name]["environment"]["PREFECT_API_URL"])
        assert (api.hostname, str(api.port), api.path) == ("prefect-server", server_port, "/api")
        mlflow = urlparse(services[name]["environment"]["MLFLOW_TRACKING_URI"])
        assert (mlflow.hostname, str(mlflow.port)) == ("mlflow", option(argv(services["mlflow"]), "--port"))
    assert set(WORKERS.values()) == {"docqa-cpu", "docqa-gpu"}


def test_both_workers_mount_the_same_workspace_at_the_same_path(compose):
    mounts = {name: set(compose["services"][name]["volumes"]) for name in WORKERS}
    shared = mounts["cpu-worker"] & mounts["gpu-worker"]
    workspace = [m for m in shared if m.split(":")[1] == WORKSPACE]
    assert workspace, f"no common workspace mount in {mounts}"
    assert workspace[0].split(":")[0] in compose["volumes"], "the workspace is a named volume"
    for name in WORKERS:
        env = compose["services"][name]["environment"]
        assert env["PREFECT_LOCAL_STORAGE_PATH"].startswith(f"{WORKSPACE}/")


def test_mlflow_answers_the_service_name_and_localhost(compose):
    mlflow = compose["services"]["mlflow"]
    arguments = argv(mlflow)
    allowed = option(arguments, "--allowed-hosts").split(",")
    port = option(arguments, "--port")
    assert {"mlflow", f"mlflow:{port}", "localhost", "127.0.0.1"} <= set(allowed)
    backend = urlparse(option(arguments, "--backend-store-uri"))
    assert (backend.scheme, backend.hostname) == ("postgresql", "postgres")
    assert "--serve-artifacts" in arguments
    artifacts = option(arguments, "--artifacts-destination")
    assert any(m.split(":")[1] == artifacts for m in mlflow["volumes"])
    assert "psycopg2-binary" in (DOCKER / "Dockerfile.mlflow").read_text()


def test_postgres_init_script_creates_the_mlflow_database(compose):
    postgres = compose["services"]["postgres"]
    prefect_db = urlparse(
        compose["services"]["prefect-services"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert prefect_db.path == f"/{postgres['environment']['POSTGRES_DB']}"
    mlflow_db = urlparse(option(argv(compose["services"]["mlflow"]), "--backend-store-uri")).path.lstrip("/")
    scripts = [m.split(":")[0] for m in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in m]
    assert scripts, "no init script is mounted"
    sql = " ".join((DOCKER / script).read_text() for script in scripts)
    assert re.search(rf"CREATE DATABASE {mlflow_db}\b", sql)


def test_api_server_and_background_services_share_redis(compose):
    server, services = compose["services"]["prefect-server"], compose["services"]["prefect-services"]
    assert argv(server)[:3] == ["prefect", "server", "start"] and "--no-services" in argv(server)
    assert argv(services) == ["prefect", "server", "services", "start"]
    for key in (
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_MESSAGING_BROKER",
        "PREFECT_MESSAGING_CACHE",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE",
        "PREFECT_SERVER_DOCKET_URL",
    ):
        assert server["environment"][key] == services["environment"][key], key
    assert urlparse(services["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]).hostname == "postgres"
    assert services["environment"]["PREFECT_MESSAGING_BROKER"].startswith("prefect_redis.")
    # each prefect-redis component reads its own connection setting (unset, it tries localhost)
    for key in (
        "PREFECT_REDIS_MESSAGING_URL",
        "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL",
        "PREFECT_SERVER_DOCKET_URL",
    ):
        assert urlparse(services["environment"][key]).hostname == "redis", key
    assert services["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert re.search(r'"prefect-redis==[\d.]+"', (DOCKER / "Dockerfile").read_text())


def test_gpu_image_is_cuda_with_torch_cuda_build_and_bitsandbytes():
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.gpu")
    defaults = dict(args.split("=", 1) for keyword, args in instructions if keyword == "ARG" and "=" in args)
    base = next(args for keyword, args in instructions if keyword == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
    assert base.startswith("nvidia/cuda:12."), base
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("pip install" in run and "bitsandbytes" in run for run in runs)
    torch_install = next(run for run in runs if "download.pytorch.org/whl/${TORCH_CUDA}" in run)
    assert defaults["TORCH_CUDA"].startswith("cu12") and "+${TORCH_CUDA}" in torch_install
    # the project is installed against the pins without the torch line, so pip keeps the CUDA build
    assert any("sed '/^torch==/d' constraints.txt > constraints-gpu.txt" in run for run in runs)
    project_install = next(run for run in runs if re.search(PROJECT_INSTALL, run))
    assert "-c constraints-gpu.txt" in project_install and "torch.version.cuda" in project_install
    entrypoint = next(args for keyword, args in instructions if keyword == "ENTRYPOINT")
    assert f'"--pool", "{DEPLOY["GPU_POOL"]}"' in entrypoint


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_keep_the_code_where_deployments_look_for_it(dockerfile):
    """`docqa deploy` gives process-pool deployments the installed project's root as their path: an
    editable install at deployments.deploy.CONTAINER_WORKDIR makes it the same in both images."""
    instructions = dockerfile_instructions(DOCKER / dockerfile)
    assert ("WORKDIR", DEPLOY["CONTAINER_WORKDIR"]) in instructions
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(PROJECT_INSTALL, run) for run in runs)
