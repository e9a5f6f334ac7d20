"""`dagster dev` for tests: the repository's workspace.yaml and dagster.yaml, a temporary home, a free port.

`dagster dev` starts the webserver, the daemon and a code server; all of them are stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).parents[1]

LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


class DagsterDevError(RuntimeError):
    """`dagster dev` did not come up, or its code location failed to load."""


@dataclass
class DagsterDev:
    url: str
    home: Path
    log: Path
    process: subprocess.Popen
    location: str = ""  # the name of the code location, once loaded

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """Run a GraphQL query against the webserver and return its `data` (errors raise)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL error: {payload['errors'][0].get('message')}")
        return payload["data"]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output, each repeated line shown once."""
        distinct = dict.fromkeys(reversed(self.log.read_text(errors="replace").splitlines()))
        return "\n".join(reversed(list(distinct)[:lines]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dagster_command() -> list[str]:
    script = Path(sys.executable).parent / "dagster"
    return [str(script)] if script.exists() else [shutil.which("dagster") or "dagster"]


@contextmanager
def dagster_dev(workdir: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[DagsterDev]:
    """Start `dagster dev` with DAGSTER_HOME under `workdir`; yield once the code location has loaded.

    The process sees no RECOPIPELINE_* or DAGSTER_* variable of the caller's environment, only those in `env`.
    """
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = workdir / "dagster_dev.log"
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("RECOPIPELINE_", "DAGSTER_"))}
    environment = {**inherited, "DAGSTER_HOME": str(home), **(env or {})}
    with log.open("w") as output:
        process = subprocess.Popen(
            [*_dagster_command(), "dev", "-w", str(REPOSITORY / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPOSITORY,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the webserver, daemon and code server stop with it
        )
    server = DagsterDev(url=f"http://127.0.0.1:{port}", home=home, log=log, process=process)
    try:
        _wait_until_loaded(server, timeout)
        yield server
    finally:
        _stop(process)


def _wait_until_loaded(server: DagsterDev, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            workspace = server.graphql(LOCATION_STATUS)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        entries = workspace.get("locationEntries") or []
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            errors = [
                f"{entry['name']}: {entry['locationOrLoadError'].get('message', '').strip()}"
                for entry in entries
                if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"
            ]
            if errors:
                raise DagsterDevError("code location failed to load: " + "; ".join(errors))
            server.location = entries[0]["name"]
            return
        time.sleep(0.5)
    raise DagsterDevError(f"dagster dev was not ready within {timeout:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """Interrupt `dagster dev` (it stops its children), then make sure its process group is gone."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers in the group started above
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
