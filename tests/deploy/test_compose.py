"""docker-compose.yml (+ the GPU and multi-machine overrides) and .env.example, checked without an engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compose import (
    ROOT,
    InterpolationError,
    active_services,
    load_compose,
    read_env_file,
    service_environment,
)

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.multi.yml"]
SECRETS = {"POSTGRES_PASSWORD": "pg-secret-123", "REDIS_PASSWORD": "redis-secret-456"}


def dotenv(**extra: str) -> dict[str, str]:
    """.env as a user writes it: the example with its required secrets filled in."""
    return {**read_env_file(ROOT / ".env.example"), **SECRETS, **extra}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_match_the_compose_specification(name: str) -> None:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is part of the test extra"
    result = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_have_no_defaults() -> None:
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        load_compose(env=read_env_file(ROOT / ".env.example"))
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        load_compose(env={**read_env_file(ROOT / ".env.example"), "POSTGRES_PASSWORD": "x"})


def test_the_stack_services_wait_for_what_they_need() -> None:
    services = active_services(load_compose(env=dotenv()))
    assert set(services) == {"api", "worker", "predictor", "migrate", "postgres", "redis"}
    for name in ("api", "worker", "predictor", "postgres", "redis"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker", "predictor"):  # migrations are applied before any starts
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    assert services["migrate"]["command"] == ["finetune", "migrate"]
    assert services["api"]["build"]["target"] == services["migrate"]["build"]["target"] == "api"
    assert services["worker"]["build"]["target"] == services["predictor"]["build"]["target"] == "worker"
    assert services["predictor"]["command"] == ["finetune", "worker", "--queues", "predict"]  # predictions only


def test_api_is_published_on_8000_and_workers_scale() -> None:
    services = active_services(load_compose(env=dotenv()))
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]  # loopback until an API key exists
    exposed = active_services(load_compose(env=dotenv(FINETUNE_API_BIND="0.0.0.0")))["api"]["ports"]
    assert exposed == ["0.0.0.0:8000:8000"]
    worker = services["worker"]
    # `docker compose up --scale worker=3` needs replicas that do not collide.
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    for svc in services.values():
        assert "container_name" not in svc


def test_api_and_workers_share_one_database_broker_and_artifact_volume() -> None:
    model = load_compose(env=dotenv())
    services = model["services"]
    api = service_environment(services["api"], dotenv())
    worker = service_environment(services["worker"], dotenv())
    for key in ("FINETUNE_DATABASE_URL", "FINETUNE_BROKER_URL", "FINETUNE_ARTIFACTS", "FINETUNE_HOME"):
        assert api[key] == worker[key], key
    assert api["FINETUNE_DATABASE_URL"] == "postgresql+psycopg://finetune:pg-secret-123@postgres:5432/finetune"
    assert api["FINETUNE_BROKER_URL"] == "redis://:redis-secret-456@redis:6379/0"
    assert services["api"]["volumes"] == services["worker"]["volumes"] == ["artifacts:/data"]
    assert api["FINETUNE_HOME"] == "/data" and api["FINETUNE_ARTIFACTS"].startswith("/data/")
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert {"pgdata", "artifacts", "redisdata"} <= set(model["volumes"])
    # The database the migration and the API use is the one postgres creates, with the same password.
    pg = services["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]


def test_settings_read_the_services_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    worker = service_environment(load_compose(env=dotenv())["services"]["worker"], dotenv())
    for key, value in worker.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://") and not settings.is_sqlite
    assert settings.broker_url.startswith("redis://")
    assert settings.queues == ["cpu"]
    assert settings.artifacts == "/data/artifacts"
    assert settings.max_upload_bytes == 1 << 30


def test_cpu_host_has_no_gpu_reservation_and_the_gpu_override_adds_one() -> None:
    cpu = load_compose(env=dotenv())["services"]["worker"]
    assert "deploy" not in cpu
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    gpu = load_compose("docker-compose.yml", "docker-compose.gpu.yml", env=dotenv())["services"]["worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert re.search(r"/whl/cu\d+$", gpu["build"]["args"]["TORCH_INDEX_URL"])
    assert service_environment(gpu, dotenv())["FINETUNE_WORKER_QUEUES"] == "gpu,cpu"


def test_s3_profile_adds_minio_and_multi_machine_publishes_on_a_chosen_address() -> None:
    env = dotenv(FINETUNE_ARTIFACTS="s3://finetune/artifacts", AWS_SECRET_ACCESS_KEY="minio-secret")
    model = load_compose(env=env)
    assert "minio" not in active_services(model)
    s3 = active_services(model, {"s3"})
    assert {"minio", "minio-init"} <= set(s3)
    assert s3["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "minio-secret"
    assert service_environment(s3["worker"], env)["FINETUNE_ARTIFACTS"] == "s3://finetune/artifacts"
    with pytest.raises(InterpolationError, match="FINETUNE_PUBLISH_BIND"):
        load_compose("docker-compose.yml", "docker-compose.multi.yml", env=env)
    multi = load_compose("docker-compose.yml", "docker-compose.multi.yml", env={**env, "FINETUNE_PUBLISH_BIND": "10.0.0.5"})
    assert multi["services"]["postgres"]["ports"] == ["10.0.0.5:5432:5432"]
    assert multi["services"]["redis"]["ports"] == ["10.0.0.5:6379:6379"]


def test_worker_machine_points_at_the_main_machine() -> None:
    env = dotenv(POSTGRES_HOST="10.0.0.5", REDIS_HOST="10.0.0.5")
    worker = service_environment(load_compose(env=env)["services"]["worker"], env)
    assert "@10.0.0.5:5432/" in worker["FINETUNE_DATABASE_URL"]
    assert worker["FINETUNE_BROKER_URL"].endswith("@10.0.0.5:6379/0")


def test_env_example_documents_only_real_settings() -> None:
    """Every FINETUNE_* name in .env.example (commented or not) is a Settings field or used by the compose files."""
    from app.settings import Settings

    text = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#?(FINETUNE_[A-Z0-9_]+)=", text, re.M))
    compose_text = "".join((ROOT / f).read_text() for f in COMPOSE_FILES)
    fields = {f"FINETUNE_{name.upper()}" for name in Settings.model_fields}
    unknown = {n for n in names if n not in fields and f"${{{n}" not in compose_text}
    assert not unknown, f"not a setting and not used by compose: {sorted(unknown)}"
    assert not re.search(r"^(POSTGRES_PASSWORD|REDIS_PASSWORD|AWS_SECRET_ACCESS_KEY)=\S", text, re.M), \
        "the example must not carry a secret"
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0, ".env must be git-ignored"
