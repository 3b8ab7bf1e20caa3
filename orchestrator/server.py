"""``dor-bench server --data DIR``: a team's MLflow tracking server on 127.0.0.1, its runs in a
PostgreSQL cluster of its own (``DIR/postgres``) and its artifacts served from ``DIR/artifacts``.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user and its
programs run through ``su``. The database's password is made once at random, kept in
``DIR/postgres.password`` (readable by its owner only) and handed to MLflow through ``PGPASSWORD``,
never on a command line."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from orchestrator.console import log
from orchestrator.ui import HOST, port_in_use
from workers.errors import DorBenchError

#: How long a driver keeps the writes for a store it cannot reach (a server restarting) before it
#: stops, in seconds: ``--store-timeout`` of ``run`` and ``tune``, handed to ``tracking.Tracker``
#: through the variable. Here, beside the server it is about, it is read without importing MLflow.
STORE_TIMEOUT_S = 600.0
STORE_TIMEOUT_ENV = "DOR_BENCH_STORE_TIMEOUT"
#: The database role and database that hold MLflow's tables.
DATABASE = "mlflow"
#: The system user that owns the cluster when dor-bench runs as root (Debian's package makes it).
OWNER = "postgres"
#: How long a start may take: MLflow's first start creates its tables (tens of seconds on 2 cores).
START_S = 180.0
INSTALL = (
    "install Debian's 'postgresql' package (as root: scripts/ensure-postgres in a dor-bench checkout, "
    "or apt-get install postgresql), then run the command again."
)


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``): Debian's newest
    ``/usr/lib/postgresql/<major>/bin``, else the one ``initdb`` on PATH is in."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: _major(p.parents[1].name))
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    if initdb is not None and (Path(initdb).resolve().parent / "pg_ctl").is_file():
        return Path(initdb).resolve().parent
    raise DorBenchError("PostgreSQL is not installed: no initdb in /usr/lib/postgresql/*/bin or on PATH.", INSTALL)


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class TeamServer:
    """PostgreSQL and the MLflow server over it, started and stopped together (a context
    manager), or each on its own (a restart keeps both ports, so the tracking URI stays valid)."""

    def __init__(self, data: Path, port: int, workers: int = 4):
        self.data, self.port, self.workers = data.expanduser().absolute(), port, workers
        self.bin = postgres_bin()
        self.cluster, self.artifacts = self.data / "postgres", self.data / "artifacts"
        self.password_file = self.data / "postgres.password"
        self.mlflow_log = self.data / "mlflow-server.log"
        self.db_port = free_port()
        self.mlflow: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The tracking URI for ``--tracking-uri``."""
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> TeamServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if port_in_use(self.port):
            raise DorBenchError(
                f"Port {self.port} on {HOST} is already in use.",
                "pass another one with --port, or stop what listens there.",
            )
        self.data.mkdir(parents=True, exist_ok=True)
        if not (self.cluster / "PG_VERSION").is_file():
            self.init_cluster()
        self.start_postgres()
        self.create_database()
        self.start_mlflow()

    def stop(self) -> None:
        """Stop MLflow, then PostgreSQL (each only if running)."""
        self.stop_mlflow()
        self.stop_postgres()

    # ------------------------------------------------------------------ PostgreSQL
    def _owned(self, command: list[str]) -> list[str]:
        """``command`` as the cluster's owner: the ``postgres`` user when we are root, run from
        ``/`` (PostgreSQL refuses to start in a folder its user cannot enter, such as root's home
        or a private temporary folder)."""
        if os.geteuid() != 0:
            return command
        return ["su", OWNER, "-s", "/bin/sh", "-c", f"cd / && {shlex.join(command)}"]

    def _run(self, command: list[str], what: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self._owned(command), capture_output=True, text=True)
        if done.returncode != 0:
            raise DorBenchError(
                f"PostgreSQL could not {what}: {(done.stderr or done.stdout).strip()}",
                f"see {self.cluster / 'server.log'} if it exists; a cluster left in a bad state can be "
                f"moved away (it holds the runs) and is made again at the next start.",
            )
        return done

    def init_cluster(self) -> None:
        """A new cluster in ``DIR/postgres`` with the ``mlflow`` role and a random password; it
        listens on 127.0.0.1 only (TCP, no Unix socket) and asks for the password."""
        password = secrets.token_urlsafe(24)
        self.cluster.mkdir(mode=0o700)
        pwfile = self.data / ".initdb-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        try:
            if os.geteuid() == 0:
                shutil.chown(self.cluster, OWNER, OWNER)
                shutil.chown(pwfile, OWNER, OWNER)
                if subprocess.run(self._owned(["test", "-w", str(self.cluster)])).returncode != 0:
                    self.cluster.rmdir()
                    raise DorBenchError(
                        f"The '{OWNER}' user cannot reach '{self.cluster}' (a folder above it is private).",
                        "pass a --data folder that other users may enter (e.g. under /srv or /var/tmp).",
                    )
            command = [str(self.bin / "initdb"), "-D", str(self.cluster), "-U", DATABASE, f"--pwfile={pwfile}"]
            self._run(
                [*command, "-E", "UTF8", "--locale=C", "--auth-host=scram-sha-256", "--auth-local=peer"],
                "create its cluster",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.cluster / "postgresql.conf").open("a") as conf:
            conf.write("\n# dor-bench server\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bin / "pg_ctl"), "-D", str(self.cluster), *args]

    def postgres_running(self) -> bool:
        return subprocess.run(self._owned(self._pg_ctl("status")), capture_output=True).returncode == 0

    def start_postgres(self) -> None:
        if self.postgres_running():  # left by a server that was killed: its port is unknown
            self._run(self._pg_ctl("-m", "fast", "-w", "stop"), "stop the cluster left running")
        log_file = str(self.cluster / "server.log")
        self._run(self._pg_ctl("-l", log_file, "-o", f"-p {self.db_port}", "-w", "-t", "60", "start"), "start")

    def stop_postgres(self) -> None:
        if self.cluster.is_dir() and self.postgres_running():
            self._run(self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop"), "stop")

    def password(self) -> str:
        if not self.password_file.is_file():
            raise DorBenchError(
                f"The cluster in '{self.cluster}' has no password file '{self.password_file}'.",
                "move the cluster folder away (it holds the runs) to start a new one, or put its password back.",
            )
        return self.password_file.read_text().strip()

    def backend_uri(self) -> str:
        """The database for MLflow (no password: it goes through ``PGPASSWORD``)."""
        return f"postgresql://{DATABASE}@{HOST}:{self.db_port}/{DATABASE}"

    def create_database(self) -> None:
        """The ``mlflow`` database, unless it is there."""
        import psycopg

        with psycopg.connect(
            host=HOST, port=self.db_port, user=DATABASE, password=self.password(), dbname="postgres", autocommit=True
        ) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                connection.execute(f"CREATE DATABASE {DATABASE}")

    # ------------------------------------------------------------------ MLflow
    def start_mlflow(self) -> None:
        """The MLflow server, ready to answer (its output goes to ``DIR/mlflow-server.log``)."""
        command = [
            *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri()),
            *("--artifacts-destination", str(self.artifacts), "--serve-artifacts"),
            *("--host", HOST, "--port", str(self.port), "--workers", str(self.workers)),
        ]
        self.artifacts.mkdir(parents=True, exist_ok=True)
        # MLflow's job runner (GenAI jobs, 8 more processes) is off unless asked for: runs do not use it
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "PGPASSWORD": self.password()}
        with self.mlflow_log.open("ab") as out:
            # a session of its own: the terminal's Ctrl-C reaches us, and we stop it in order
            self.mlflow = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.mlflow.poll() is not None:
                tail = self.mlflow_log.read_text(errors="replace").splitlines()[-15:]
                self.mlflow = None
                raise DorBenchError(
                    "The MLflow server stopped while starting:\n" + "\n".join(tail),
                    f"read {self.mlflow_log}.",
                )
            if self.answers():
                return
            time.sleep(0.3)
        self.stop_mlflow()
        raise DorBenchError(f"The MLflow server did not answer within {START_S:.0f} s.", f"read {self.mlflow_log}.")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop_mlflow(self) -> None:
        """SIGTERM to the server and its workers (their process group); once it has exited and
        its port is closed (at most 20 s), SIGKILL to whatever of the group is left."""
        if self.mlflow is None:
            return
        process, self.mlflow = self.mlflow, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while (process.poll() is None or port_in_use(self.port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def wait(self) -> int:
        """Until the MLflow server exits; its exit status."""
        assert self.mlflow is not None
        return self.mlflow.wait()


def serve(data: Path, port: int, workers: int) -> int:
    """``dor-bench server``: run both until Ctrl-C or SIGTERM (``cli.main`` turns it into
    KeyboardInterrupt), then stop both; 0 when stopped so, else the MLflow server's exit status."""
    server = TeamServer(data, port, workers)
    try:
        server.start()
        log(f"[dor-bench] MLflow server: runs in PostgreSQL ({server.cluster}), artifacts in {server.artifacts}")
        log(f"[dor-bench] tracking URI: {server.uri}   (dor-bench run FILE --tracking-uri {server.uri})")
        log(f"[dor-bench] UI: {server.uri}   server log: {server.mlflow_log}   (Ctrl-C stops both)")
        code = server.wait()
        log(f"[dor-bench] the MLflow server exited ({code}); see {server.mlflow_log}")
        return code or 1
    except KeyboardInterrupt:
        log("[dor-bench] stopping the MLflow server and PostgreSQL")
        return 0
    finally:
        server.stop()
