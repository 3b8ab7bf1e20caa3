"""The cluster files (docker/, scripts/install-for-cuda) say what the engines and the lock say.

The KubeRay manifests validate against KubeRay's own CRD schemas (tests/data/kuberay, v1.7.0)
with unknown fields refused, as the API server's strict field validation refuses them, and the
volume claim against Kubernetes' schema (kubernetes-validate). The shell scripts pass shellcheck
and the Dockerfile hadolint. The image installs the lock on Ray's image of the locked Ray and
Python, with the same shared-storage layout as the SLURM script. install-for-cuda keeps every
locked version and leaves out exactly the CUDA stack of the locked torch for the other builds.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from orchestrator.settings.benchmark import DATA_ENV
from workers.paths import cache_dir

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CRDS = ROOT / "tests" / "data" / "kuberay"
MANIFESTS = {"kuberay-cluster.yaml": "RayCluster", "kuberay-job.yaml": "RayJob"}
SHARED = "/shared"  # where the manifests mount the shared volume and the image's ENV points


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[normalise(name)] = version
    return pins


def manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / name).read_text())


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 schema of a KubeRay kind, every object closed to fields it does not declare."""
    text = (CRDS / f"ray.io_{kind.lower()}s.yaml").read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return closed(version["schema"]["openAPIV3Schema"])


def closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
    if "properties" in schema and not open_ended:
        out["additionalProperties"] = False
    return out


def crd_errors(document: dict[str, Any], kind: str) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(kind))
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document))


def containers(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Ray container of a cluster spec by group ('head' or the worker group's name), with its pod."""
    groups = {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}
    return {name: g["template"]["spec"] for name, g in groups.items()}


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def tool(name: str) -> str:
    """A linter the dev extra installs next to this interpreter."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: it is in the dev extra, run `make setup`")
    return found


@pytest.mark.parametrize(("name", "kind"), MANIFESTS.items())
def test_kuberay_manifests_validate_against_kuberays_crd(name, kind):
    document = manifest(name)
    assert (document["apiVersion"], document["kind"]) == ("ray.io/v1", kind)
    assert crd_errors(document, kind) == []


def test_the_crd_check_refuses_misspelt_fields_and_wrong_types():
    job = manifest("kuberay-job.yaml")
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    job["spec"]["ttlSecondsAfterFinished"] = "600"
    worker = containers(job["spec"]["rayClusterSpec"])["gpu"]["containers"][0]
    worker["volumeMount"] = worker.pop("volumeMounts")
    errors = "\n".join(crd_errors(job, "RayJob"))
    assert "'shutdownAfterJobFinish' was unexpected" in errors
    assert "spec.ttlSecondsAfterFinished: '600' is not of type 'integer'" in errors
    assert "'volumeMount' was unexpected" in errors


def test_the_volume_claim_validates_against_kubernetes():
    claim = yaml.safe_load((DOCKER / "kuberay-storage.yaml").read_text())
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(claim, version, strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every node writes it at once
    claim["spec"]["accesModes"] = claim["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError, match="accesModes"):
        kubernetes_validate.validate(claim, version, strict=True)


def test_the_job_describes_the_same_cluster_as_the_raycluster():
    assert manifest("kuberay-job.yaml")["spec"]["rayClusterSpec"] == manifest("kuberay-cluster.yaml")["spec"]


def test_the_cluster_runs_the_locked_ray_with_token_auth_gpus_and_the_shared_volume():
    claim = yaml.safe_load((DOCKER / "kuberay-storage.yaml").read_text())["metadata"]["name"]
    job = manifest("kuberay-job.yaml")["spec"]
    cluster = job["rayClusterSpec"]
    assert cluster["rayVersion"] == lock()["ray"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert job["shutdownAfterJobFinishes"] is True
    pods = containers(cluster)
    for group, pod in pods.items():
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        shared = [m for m in container["volumeMounts"] if m["mountPath"] == SHARED]
        assert len(shared) == 1, group
        assert volumes[shared[0]["name"]]["persistentVolumeClaim"]["claimName"] == claim, group
        limits = container["resources"]["limits"]
        assert (int(limits.get("nvidia.com/gpu", 0)) >= 1) == (group != "head"), group
        env = {e["name"] for e in container.get("env", [])}
        # The driver runs on the head and alone writes to MLflow: the credentials go there only.
        assert ({n for n in env if n.startswith("MLFLOW_")} != set()) == (group == "head"), group
    (head,) = pods["head"]["containers"]
    uri = {e["name"]: e for e in head["env"]}["MLFLOW_TRACKING_URI"]
    assert set(uri["valueFrom"]) == {"secretKeyRef"}


def test_the_job_runs_dor_bench_with_the_tracking_uri_of_the_head():
    """KubeRay pastes the entrypoint into a bash command in its submitter pod, which has no
    MLFLOW_TRACKING_URI; `bash -c '...'` must carry "$MLFLOW_TRACKING_URI" through it unexpanded
    to the head, whose container has it from the Secret."""
    entrypoint = manifest("kuberay-job.yaml")["spec"]["entrypoint"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    show_argv = f"{shlex.quote(sys.executable)} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    done = subprocess.run(
        ["bash", "-ce", f"{show_argv} {entrypoint}"], env=env, capture_output=True, text=True, check=True
    )
    shell, flag, script = json.loads(done.stdout)
    assert (shell, flag) == ("bash", "-c")
    words = shlex.split(script)
    run = words.index("dor-bench")
    assert words[run : run + 2] == ["dor-bench", "run"]
    assert words[words.index("--tracking-uri") + 1] == "$MLFLOW_TRACKING_URI"
    assert words[words.index("--checkpoint-dir") + 1].startswith(f"{SHARED}/")
    assert words[words.index("cd") + 1].startswith(f"{SHARED}/")  # outputs left at defaults too


def test_the_image_is_rays_image_of_the_locked_ray_python_and_cuda():
    text = dockerfile()
    (ray, python) = re.findall(r"^FROM rayproject/ray:([\d.]+)-py(\d+)-\$\{CUDA\}$", text, re.M)[0]
    assert ray == lock()["ray"]
    assert python == f"{sys.version_info.major}{sys.version_info.minor}"  # the lock's interpreter
    major, minor = lock()["cuda-toolkit"].split(".")[:2]
    assert re.search(r"^ARG CUDA=(\S+)$", text, re.M)[1] == f"cu{major}{minor}"  # the lock's torch build
    install = re.search(r"scripts/install-for-cuda ([^\\\n]*)", text)
    assert install is not None and shlex.split(install[1]) == ["${CUDA}", "python"]  # `.`, no dev extra
    assert re.search(r"^COPY .*\bconstraints\.txt\b", text, re.M)
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "1000:100"  # Ray's `ray` user, not root


def test_the_image_and_the_slurm_script_keep_the_same_shared_layout(tmp_path, monkeypatch):
    text = dockerfile()
    image = dict(re.findall(r"(\w+)=(/shared\S*)", text[re.search(r"^ENV ", text, re.M).start() :]))
    sbatch = (DOCKER / "slurm-ray.sbatch").read_text()
    slurm = dict(re.findall(r'^export (\w+)="(?:\$\{\w+:-)?\$shared(/[^"}]*)', sbatch, re.M))
    assert set(image) == {"HF_HOME", "DOR_BENCH_CACHE", DATA_ENV}
    assert {name: path.removeprefix(SHARED) for name, path in image.items()} == {n: slurm.get(n) for n in image}
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))  # the variable dor-bench reads
    assert cache_dir("probe") == tmp_path / "probe"


def test_shell_scripts_pass_shellcheck():
    scripts = [*sorted((ROOT / "scripts").iterdir()), DOCKER / "slurm-ray.sbatch", ROOT / ".ci" / "run"]
    done = subprocess.run([tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_passes_hadolint():
    done = subprocess.run([tool("hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def torch_cuda_stack() -> set[str]:
    """The packages the installed (locked) torch brings for CUDA on Linux, dependencies included."""
    linux = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64"}

    def requires(name: str, extras: frozenset[str]) -> list[Requirement]:
        found = [Requirement(r) for r in metadata.requires(name) or []]
        return [
            r
            for r in found
            if r.marker is None or any(r.marker.evaluate({**linux, "extra": e}) for e in extras or {""})
        ]

    stack = [r for r in requires("torch", frozenset()) if re.match(r"(nvidia|cuda|triton)\b", normalise(r.name))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while stack:
        req = stack.pop()
        key = (normalise(req.name), frozenset(req.extras))
        if key not in seen:
            seen.add(key)
            stack.extend(requires(req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def plan(*args: str, tmp_path: Path) -> list[list[str]]:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-for-cuda"), "--print", *args],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_install_for_cuda_installs_the_lock_as_it_is_for_cu130(tmp_path):
    assert plan("cu130", "/envs/x/bin/python", tmp_path=tmp_path) == [
        ["/envs/x/bin/python", "-m", "pip", "install", "-c", "constraints.txt", "."]
    ]


@pytest.mark.parametrize("tag", ["cu126", "cu132", "cpu"])
def test_install_for_cuda_takes_the_locked_torch_built_for_the_tag(tag, tmp_path):
    pins = lock()
    (torch, constrained) = plan(tag, "/envs/x/bin/python", "-e", ".[dev]", tmp_path=tmp_path)
    assert torch == [
        *["/envs/x/bin/python", "-m", "pip", "install", "--index-url", f"https://download.pytorch.org/whl/{tag}"],
        *[f"torch=={pins['torch']}+{tag}", f"torchvision=={pins['torchvision']}+{tag}"],
    ]
    assert constrained[:5] + constrained[6:] == ["/envs/x/bin/python", "-m", "pip", "install", "-c", "-e", ".[dev]"]
    trimmed = Path(constrained[5])
    assert trimmed.parent == tmp_path
    kept = trimmed.read_text().splitlines()
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    assert kept == [line for line in lines if line in kept]  # unchanged, in order
    left_out = {normalise(line.split("==")[0]) for line in set(lines) - set(kept)}
    assert left_out == torch_cuda_stack() & set(pins)
    assert {"torch", "torchvision", "numpy", "ray"} <= {normalise(line.split("==")[0]) for line in kept}


def test_install_for_cuda_refuses_a_build_pytorch_does_not_make(tmp_path):
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-for-cuda"), "cu118"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "cu130, cu132, cu126 and cpu" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_vendored_crds_keep_their_licence():
    assert "Apache License" in (CRDS / "LICENSE").read_text()
    for kind in MANIFESTS.values():
        assert "Licensed under the Apache License" in (CRDS / f"ray.io_{kind.lower()}s.yaml").read_text()[:600]
