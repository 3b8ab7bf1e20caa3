"""MLflow -> one Arrow table, one row per trial run: run info, the spec as typed columns, the
final metrics as float columns. The aggregator reads only this table, so a report can also be
built from a saved ``results.parquet``."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from orchestrator.secrets import redact
from orchestrator.tracking import ATTEMPTS, DEVICE_NAME, ERROR, PARENT, RUN_KEY, TRIAL_NAME, search_all
from orchestrator.translate.params import params_from_spec
from workers.errors import DorBenchError, NotFoundError, did_you_mean
from workers.spec import LEGACY_PROTOCOL, TrialSpec

#: The run column of the device a trial ran on (its cost's; None for runs recorded before it was).
DEVICE = "device_name"
#: Run columns, before the spec and metric columns.
RUN_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(),
    "parent_run_id": pa.string(),
    "run_key": pa.string(),
    "trial": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "attempts": pa.int64(),
    DEVICE: pa.string(),
    "start_time": pa.timestamp("ms"),
    "end_time": pa.timestamp("ms"),
    "artifact_uri": pa.string(),
}
SPEC_COLUMNS_KEY = b"dor_bench.spec_columns"
METRIC_COLUMNS_KEY = b"dor_bench.metric_columns"
#: The boolean column that says whether DOR was on (the spec's ``dor`` is not null).
DOR = "dor"
#: The column (not a spec field) that marks a post-hoc calibrated twin of a trial in the tables.
CALIBRATOR = "calibrator"


def _arrow_type(annotation: Any) -> pa.DataType | type[BaseModel] | None:
    """The Arrow type of a TrialSpec field (a nested model is returned as is; None = dynamic)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is Literal or annotation is str:
        return pa.string()
    if annotation is bool:
        return pa.bool_()
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    if origin is list:
        return pa.list_(pa.string())
    return None


def spec_schema() -> dict[str, pa.DataType]:
    """Typed columns of the TrialSpec's fixed fields, named as translate.params_from_spec names them."""
    out: dict[str, pa.DataType] = {}

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            kind = _arrow_type(field.annotation)
            if isinstance(kind, type):
                out[prefix + name] = pa.bool_()  # the section itself: on or off
                walk(f"{prefix}{name}.", kind)
            elif kind is not None:
                out[prefix + name] = kind

    walk("", TrialSpec)
    return out


SPEC_SCHEMA = spec_schema()


def decode_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow params of a trial (JSON-encoded unless a string) -> typed spec values."""
    out: dict[str, Any] = {}
    for key, text in params.items():
        kind = SPEC_SCHEMA.get(key)
        if kind == pa.string():  # logged raw, except None as "null"
            out[key] = None if text == "null" else text
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if kind == pa.bool_():  # a section: "null" when off; absent (its fields logged) when on
            value = value is not None
        out[key] = value
    for section, kind in SPEC_SCHEMA.items():
        if kind == pa.bool_() and section not in out:
            out[section] = any(k.startswith(section + ".") for k in params)
    out.setdefault("protocol", LEGACY_PROTOCOL)  # runs recorded before specs carried it
    return out


def spec_values(spec: TrialSpec) -> dict[str, Any]:
    """A planned spec as the typed values collect() gives its run (for expected cells)."""
    return decode_params(params_from_spec(spec))


def _dynamic_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _as_type(values: list[Any], kind: pa.DataType) -> list[Any]:
    if kind == pa.string():
        return [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    if kind == pa.float64():
        return [None if v is None else float(v) for v in values]
    return values


def open_experiment(tracking_uri: str, experiment: str | None) -> tuple[MlflowClient, Any]:
    """The client and experiment, or a DorBenchError that says what exists instead."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise NotFoundError(
                f"No MLflow store at '{path}' (tracking URI {redact(tracking_uri)}).",
                "run `dor-bench run FILE` first, or pass --tracking-uri of the "
                "store your runs are in (the benchmark file's tracking_uri).",
            )
    try:
        client = MlflowClient(tracking_uri)
        experiments = [e for e in client.search_experiments() if e.name != "Default"]
    except Exception as err:  # the store itself is unusable
        raise DorBenchError(
            f"Cannot read the MLflow tracking store '{redact(tracking_uri)}': {redact(str(err))}",
            "check --tracking-uri (e.g. sqlite:///mlflow.db, or a server URL).",
        ) from None
    names = [e.name for e in experiments]
    if experiment is None:
        if len(experiments) == 1:
            return client, experiments[0]
        raise DorBenchError(
            f"The store {redact(tracking_uri)} holds {len(names) or 'no'} experiments"
            f"{': ' + ', '.join(sorted(names)) if names else ''}.",
            "name one with --experiment NAME (the benchmark file's `name`)."
            if names
            else "run `dor-bench run FILE` first.",
        )
    found = next((e for e in experiments if e.name == experiment), None)
    if found is None:
        raise NotFoundError(
            f"No experiment '{experiment}' in {redact(tracking_uri)}.{did_you_mean(experiment, names)}",
            f"existing experiments: {', '.join(sorted(names)) or 'none'}.",
        )
    return client, found


def search_child_runs(client: MlflowClient, experiment_id: str, parent: str | None = None) -> list:
    """Every trial run of the experiment (of one parent run when given), paged 1000 at a time."""
    query = f"tags.`{RUN_KEY}` != ''" + (f" and tags.`{PARENT}` = '{parent}'" if parent else "")
    return search_all(client, experiment_id, query)


def runs_to_table(runs: list, metadata: dict[str, str] | None = None) -> pa.Table:
    """MLflow runs -> the results table (schema metadata lists the spec and metric columns)."""
    specs = [decode_params(r.data.params) for r in runs]
    columns: dict[str, pa.Array] = {}
    info = {
        "run_id": [r.info.run_id for r in runs],
        "parent_run_id": [r.data.tags.get(PARENT) for r in runs],
        "run_key": [r.data.tags.get(RUN_KEY) for r in runs],
        "trial": [r.data.tags.get(TRIAL_NAME) for r in runs],
        "status": [r.info.status for r in runs],
        "error": [r.data.tags.get(ERROR) for r in runs],
        "attempts": [int(r.data.tags.get(ATTEMPTS, 1)) for r in runs],
        DEVICE: [r.data.tags.get(DEVICE_NAME) for r in runs],
        "start_time": [r.info.start_time for r in runs],
        "end_time": [r.info.end_time for r in runs],
        "artifact_uri": [r.info.artifact_uri for r in runs],
    }
    for name, kind in RUN_COLUMNS.items():
        columns[name] = pa.array(info[name], type=kind)
    dynamic = sorted({k for s in specs for k in s} - set(SPEC_SCHEMA))
    spec_columns = [*SPEC_SCHEMA, *dynamic]
    for name in spec_columns:
        values = [s.get(name) for s in specs]
        kind = SPEC_SCHEMA.get(name) or _dynamic_type(values)
        columns[name] = pa.array(_as_type(values, kind), type=kind)
    metric_names = sorted({k for r in runs for k in r.data.metrics if not k.startswith("epoch/")})
    for name in metric_names:
        columns[name] = pa.array([r.data.metrics.get(name) for r in runs], type=pa.float64())
    meta = {
        SPEC_COLUMNS_KEY: json.dumps(spec_columns).encode(),
        METRIC_COLUMNS_KEY: json.dumps(metric_names).encode(),
        **{f"dor_bench.{k}".encode(): v.encode() for k, v in (metadata or {}).items()},
    }
    return pa.table(columns).replace_schema_metadata(meta)


def collect(tracking_uri: str, experiment: str | None, parent: str | None = None) -> pa.Table:
    """The trial runs of ``experiment`` (of one ``parent`` run) in ``tracking_uri`` as a table.

    Raises DorBenchError for an unknown store, experiment or parent run, or one without trials.
    """
    client, exp = open_experiment(tracking_uri, experiment)
    if parent is not None:
        try:
            client.get_run(parent)
        except Exception:
            raise NotFoundError(
                f"No run '{parent}' in {redact(tracking_uri)}.",
                "pass the run id of a `dor-bench run` parent run (the MLflow UI shows it), or leave --parent out.",
            ) from None
    runs = search_child_runs(client, exp.experiment_id, parent)
    if not runs:
        raise DorBenchError(
            f"Experiment '{exp.name}' in {redact(tracking_uri)} has no trial runs"
            f"{f' under parent run {parent}' if parent else ''}.",
            "run the benchmark first (`dor-bench run FILE`); trials appear as child runs.",
        )
    return runs_to_table(runs, {"experiment": exp.name, "tracking_uri": redact(tracking_uri)})


def spec_columns(table: pa.Table) -> list[str]:
    return json.loads(table.schema.metadata[SPEC_COLUMNS_KEY])


def metric_columns(table: pa.Table) -> list[str]:
    return json.loads(table.schema.metadata[METRIC_COLUMNS_KEY])


def write_parquet(table: pa.Table, path: Path) -> Path:
    """Write the results table (its schema metadata included) to ``path``, a file meant to be
    shared: URLs in it keep no credentials (the tracking URI is redacted when collected)."""
    if "artifact_uri" in table.column_names:
        uris = pa.array([None if u is None else redact(u) for u in table.column("artifact_uri").to_pylist()])
        table = table.set_column(table.column_names.index("artifact_uri"), "artifact_uri", uris)
    pq.write_table(table, path)
    return path
