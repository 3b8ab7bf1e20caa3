"""Where a command reads and writes, resolved once on the driver.

The tracking store: ``--tracking-uri``, else the settings file's ``tracking_uri``, else
``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``. Local stores and output folders are made
absolute against the driver's current folder before anything is scheduled, so that workers on
other nodes and later commands find the same places. Under ``ray job submit --working-dir`` the
driver runs in Ray's temporary copy of that folder, deleted with the job: a relative output there
is refused at once, naming what to set, instead of being lost at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from orchestrator import DEFAULT_TRACKING_URI, TRACKING_ENV
from orchestrator.secrets import redact
from workers.errors import DorBenchError, did_you_mean

#: Set by Ray in a submitted job's driver: the job's config (its submission id, runtime env).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a local sqlite store (``sqlite:///mlflow.db``: relative to the current
    folder), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).expanduser().absolute()


def file_store_path(tracking_uri: str) -> Path | None:
    """The folder of a local file store (``file:///abs/mlruns``, ``file:mlruns`` or a plain path),
    else None (a server, a database, any other scheme)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path)).expanduser().absolute()
    if parsed.scheme == "" and tracking_uri != "databricks":  # MLflow's one scheme-less store name
        return Path(tracking_uri).expanduser().absolute()
    return None


#: The URI schemes of MLflow's tracking stores (a database URI may name its driver: postgresql+psycopg).
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks", "databricks-uc", "uc")
#: A file with one of these suffixes is a database, not a file-store folder.
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def tracking_uri_problem(uri: str) -> str | None:
    """What is wrong with a tracking URI as written, found before any store is opened (a scheme
    MLflow has no store for, an sqlite URI that names no file, a database file written as a plain
    path, a server URL without a host), or None. Says what to write instead; never shows credentials."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    shown = f"'{redact(uri)}'"
    if scheme == "sqlite" or uri.lower().startswith("sqlite/"):  # sqlite//mlflow.db: the colon left out
        path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
        if path.strip() and path != ":memory:":
            return None
        return (
            f"{shown} names no sqlite database file: write sqlite:///mlflow.db (three slashes: a path from "
            "the current folder) or sqlite:////abs/path/mlflow.db (four: an absolute path)"
        )
    if scheme in ("", "file"):
        path = url2pathname(parsed.path) if scheme else uri
        if Path(path).suffix.lower() in DATABASE_SUFFIXES:  # sqlite:/// + an absolute path: four slashes
            return f"{shown} is read by MLflow as a file-store folder, not an sqlite database: write sqlite:///{path}"
    if scheme in ("http", "https") and not parsed.netloc:
        return f"{shown} names no server: write {scheme}://HOST:PORT (e.g. http://127.0.0.1:5000)"
    if len(scheme) > 1 and scheme.split("+")[0] not in STORE_SCHEMES:
        return (
            f"{shown} has the scheme '{scheme}:', which no MLflow store has.{did_you_mean(scheme, STORE_SCHEMES)} "
            "Write sqlite:///mlflow.db (a database file), http://HOST:5000 (an MLflow server) or "
            "postgresql://HOST/DB (a database server)"
        )
    return None


#: The command-line flag that names a store.
TRACKING_FLAG = "--tracking-uri"


def well_formed(uri: str, source: str = TRACKING_FLAG) -> str:
    """``uri`` when ``tracking_uri_problem`` finds nothing wrong; else a DorBenchError naming
    ``source``, where it was written (the flag, the file's field, the variable)."""
    problem = tracking_uri_problem(uri)
    if problem:
        raise DorBenchError(
            f"{source} {problem}.",
            f"correct {source}" + ("" if source == TRACKING_FLAG else f" (or pass {TRACKING_FLAG})") + ".",
        )
    return uri


def tracking_uri(flag: str | None, file_value: str | None = None) -> str:
    """The store a command uses (flag > file > environment > default), local ones absolute.

    Raises:
        DorBenchError: the chosen URI is malformed (``tracking_uri_problem``), naming where it came from.
    """
    uri = flag or file_value or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI
    well_formed(uri, TRACKING_FLAG if flag else "tracking_uri" if file_value else f"${TRACKING_ENV}")
    database = sqlite_path(uri)
    if database is not None:
        return f"sqlite:///{database}"
    folder = file_store_path(uri)
    return folder.as_uri() if folder is not None else uri


def job_copy() -> Path | None:
    """Ray's temporary copy of the submitter's folder when this driver runs in one, else None."""
    config = os.environ.get(RAY_JOB_ENV)
    if not config:
        return None
    try:
        working_dir = json.loads(config).get("runtime_env", {}).get("working_dir")
    except (json.JSONDecodeError, AttributeError):
        return None
    return Path.cwd() if working_dir else None


def outputs(
    *, tracking: tuple[str | None, str | None], folders: Sequence[tuple[str | os.PathLike[str], str, str]]
) -> tuple[str, list[Path]]:
    """The store (``tracking`` = flag and file value) and each folder (path, what it is, how to
    set it) resolved to absolute places; refused together when any would land in a Ray job's
    temporary working copy."""
    uri = tracking_uri(*tracking)
    paths = [Path(path).expanduser().absolute() for path, _, _ in folders]
    copy = job_copy()
    if copy is not None:
        lost = [
            f"{what} {path} (set {how} to an absolute path on shared storage)"
            for path, (_, what, how) in zip(paths, folders, strict=True)
            if path.is_relative_to(copy)
        ]
        store = sqlite_path(uri) or file_store_path(uri)
        if store is not None and store.is_relative_to(copy):
            how = f"set tracking_uri in the file, --tracking-uri or ${TRACKING_ENV}"
            lost.insert(0, f"the tracking store {uri} ({how})")
        if lost:
            raise DorBenchError(
                f"This Ray job runs in a temporary copy of its working folder ({copy}), deleted when the "
                f"job ends; these outputs would be lost with it: {'; '.join(lost)}.",
                "give absolute paths (a shared filesystem on a multi-node cluster), or submit without "
                "--working-dir, and submit again.",
            )
    return uri, paths
