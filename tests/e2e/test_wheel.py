"""The wheel stands alone: built, installed into a venv of its own, run outside the checkout.

The venv is new and holds only the wheel. Its dependencies are not downloaded again:
a `.pth` file lends it the test environment's site-packages (which holds no taskorch:
the checkout's editable install is a `.pth` there, and `.pth` files of a lent directory
are not read), and `pip check` then proves the wheel's declared requirements are met.
Nothing in these tests sees the checkout: no `PYTHONPATH`, and a temporary working
directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from server.demo import EXAMPLE_SERVERS
from tests.e2e.support import ROOT, structured

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Installed:
    """The wheel built from the checkout and the venv it is installed in."""

    wheel: Path
    python: Path
    taskorch: Path


def _run(*argv: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _outside_env() -> dict[str, str]:
    """Our environment without anything that points Python at the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKORCH_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env["COLUMNS"] = "200"
    return env


def _install(wheel: Path, home: Path) -> Path:
    """Install `wheel` alone into a new venv under `home`, its requirements lent; returns it."""
    env = home / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / ("Scripts" if os.name == "nt" else "bin") / "python"
    own = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    lent = sysconfig.get_path("purelib")
    (Path(own.strip()) / "_lent_requirements.pth").write_text(lent + "\n", encoding="utf-8")
    pip = (python, "-m", "pip", "--disable-pip-version-check")
    _run(*pip, "install", "-q", "--no-deps", wheel, cwd=wheel.parent, env=_outside_env())
    _run(*pip, "check", cwd=wheel.parent, env=_outside_env())
    return env


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", out, ROOT,
    )  # fmt: skip
    (wheel,) = out.glob("taskorch-*.whl")
    home = tmp_path_factory.mktemp("venv")
    bindir = _install(wheel, home) / ("Scripts" if os.name == "nt" else "bin")
    yield Installed(wheel=wheel, python=bindir / "python", taskorch=bindir / "taskorch")


def test_the_wheel_holds_three_packages_the_license_and_type_markers(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"executor", "planner", "server"}
    for package in ("executor", "planner", "server"):
        assert f"{package}/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    where = _run(
        installed.python, "-c", "import server; print(server.__file__)",
        cwd=tmp_path, env=_outside_env(),
    )  # fmt: skip
    assert Path(where.strip()).is_relative_to(installed.python.parent.parent)


def test_the_demo_runs_the_example_plan_from_any_directory(
    installed: Installed, tmp_path: Path
) -> None:
    done = subprocess.run(
        [installed.taskorch, "demo"],
        cwd=tmp_path,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "connected to taskorch over stdio" in out
    assert "status: confirmed, approved: True" in out
    # Progress notifications, forwarded from the downstream server too.
    assert "tally (stats.running_total): added 2 of 4" in out
    assert "completed: 10/10 steps" in out
    assert "flowchart TD" in out
    assert "Keywords:" in out  # the saved digest, read back
    assert list(tmp_path.iterdir()) == []  # it wrote nothing where it was run


@pytest.mark.anyio
async def test_serve_runs_a_plan_through_create_confirm_execute(
    installed: Installed, tmp_path: Path
) -> None:
    servers = {
        name: {"command": str(installed.python), "args": ["-m", EXAMPLE_SERVERS[name]]}
        for name in ("text", "stats")
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    params = StdioServerParameters(
        command=str(installed.taskorch),
        args=["serve", "--config", str(config), "--db", str(tmp_path / "t.db")],
        env=_outside_env(),
        cwd=str(tmp_path),
    )
    steps = [
        {"id": "count", "server": "text", "tool": "word_count", "arguments": {"text": "a b. c."}},
        {
            "id": "ratio",
            "server": "stats",
            "tool": "evaluate",
            "arguments": {"expression": "${count.words} / ${count.sentences}"},
        },
    ]
    async with Client(params) as client:
        plan = structured(await client.call_tool("create_plan", {"query": "q", "steps": steps}))
        assert plan["status"] == "awaiting_confirmation"
        confirmed = structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
            )
        )
        assert confirmed["status"] == "confirmed"
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
    assert report["status"] == "completed", report
    outputs = {s["id"]: s["output"] for s in report["steps"]}
    count = outputs["count"]
    assert count["words"] == 3
    assert outputs["ratio"]["value"] == 3 / count["sentences"]
