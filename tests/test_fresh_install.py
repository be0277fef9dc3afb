"""A newcomer's fresh machine works from the README (issue 11).

README command 1, ``pip install . && jupyter lab ...``, is run as written in the README (parsed from the
bash block under "## Install and run", so this test follows the README) in a brand-new virtualenv, from
a fresh copy of the source: the lab page must load the ``jupyter-taskrun`` federated extension and the
server extension must answer.

Deliberately WITHOUT .ci/constraints.txt: users run the README command unpinned, so this test is the one
that breaks when a new upstream release breaks a fresh install. That is its point.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# what is never part of a fresh clone, when the source is not a git checkout (see source_files)
NOT_IN_A_CLONE = {
    ".git", "node_modules", ".venv", "venv", "__pycache__", ".pytest_cache", "build", "dist",
    ".ci/.venv", "jupyter_taskrun/labextension", "labextension/lib", "labextension/.yarn",
    "jupyter_taskrun/static/swagger",
}  # fmt: skip


def readme_command() -> tuple[str, str]:
    """README command 1 split into its install part and its `jupyter lab ...` part."""
    section = README.read_text(encoding="utf-8").split("## Install and run", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: no bash block under '## Install and run'"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1, f"README: expected one command under 'Install and run', got {lines}"
    install, sep, run = lines[0].partition(" && ")
    assert sep and run.split()[:2] == ["jupyter", "lab"], f"README command 1 is not `<install> && jupyter lab ...`: {lines[0]!r}"
    return install.strip(), run.strip()


def source_files() -> list[Path]:
    """The files a fresh clone of the CURRENT working tree would have.

    A `git clone` would miss uncommitted changes, which are exactly what is being tested during
    development; copying the whole tree would bring built artefacts (node_modules, the built lab
    extension, venvs) that make `pip install .` skip the very build a newcomer goes through. So: every
    tracked or untracked file that .gitignore does not ignore, as it is on disk now. On CI (a fresh
    clone) that is exactly the commit under test.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        out = None
    if out is not None and out.strip("\0"):
        files = sorted({Path(p) for p in out.split("\0") if p})
        return [p for p in files if (ROOT / p).is_file()]  # deleted but not yet committed: gone
    # not a git checkout: everything but what a clone never has (built extension included)
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [d for d in dirnames if d not in NOT_IN_A_CLONE and (rel / d).as_posix() not in NOT_IN_A_CLONE]
        files += [rel / f for f in filenames if not f.endswith((".pyc", ".sqlite3", ".tsbuildinfo"))]
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str, timeout: float = 10) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def test_readme_command_parses():
    install, run = readme_command()
    assert install.startswith("pip install")
    assert "--ServerApp.ip=127.0.0.1" in run  # the test below relies on it to reach the server


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fresh_venv_install_and_jupyter_lab_from_the_readme(tmp_path):
    install, run = readme_command()

    src = tmp_path / "src"
    for rel in source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    assert (src / "pyproject.toml").is_file() and not (src / "jupyter_taskrun" / "labextension").exists()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / "bin"
    home = tmp_path / "jupyter"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_CONSTRAINT", "JUPYTER", "VIRTUAL_ENV", "CONDA"))}
    env.update(
        # as after `source venv/bin/activate`: the README's `pip` and `jupyter` are this venv's
        VIRTUAL_ENV=str(venv),
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        # the user's own Jupyter dirs stay out of it (and so does a server of theirs: its runtime files)
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
    )

    # 1. the install part, exactly as written in the README, from the root of the fresh copy
    log = tmp_path / "install.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", install],
            cwd=src,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=720,
        )
    assert proc.returncode == 0, f"`{install}` failed after {time.monotonic() - t0:.0f}s:\n{tail(log)}"
    print(f"\nfresh install: `{install}` took {time.monotonic() - t0:.0f}s")
    where = subprocess.run(
        [str(bindir / "python"), "-c", "import jupyter_taskrun; print(jupyter_taskrun.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0 and str(venv) in where.stdout, (where.stdout, where.stderr)  # installed, not the source tree
    # `jupyter lab` runs `jupyter-lab`, looked up in the venv and then on PATH: it must come from this install
    # (the package depends on jupyterlab), not from some other Python that happens to be on this machine
    lab = shutil.which("jupyter-lab", path=env["PATH"])
    assert lab and Path(lab).parent == bindir, f"`jupyter lab` is not part of the install (found {lab})"

    # 2. the `jupyter lab ...` part, as written, plus what a test needs on top:
    #    --port: a free one (8888 may be taken by a server of the user, another test or a parallel run);
    #    --ServerApp.port_retries=0: fail rather than silently move to another port;
    #    --no-browser: there is no desktop (and no browser should pop up from a test);
    #    --IdentityProvider.token: a known random token, so that the test can authenticate (the default
    #    one is only printed in the log) and nothing else on this machine can.
    port, token = free_port(), secrets.token_hex(16)
    argv = [*shlex.split(run), f"--port={port}", "--ServerApp.port_retries=0", "--no-browser", f"--IdentityProvider.token={token}"]
    server_log = tmp_path / "lab.log"
    with server_log.open("w") as out:
        server = subprocess.Popen(
            argv, cwd=src, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            assert server.poll() is None, f"jupyter lab exited with {server.returncode}:\n{tail(server_log)}"
            try:
                status = get(f"{base}/taskrun/api/status", token, timeout=5)
                if status[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status and status[0] == 200, f"no /taskrun/api/status after 120s: {status}\n{tail(server_log)}"

        # the server extension is enabled by the install alone and answers JSON
        code, ctype, body = status
        assert ctype.startswith("application/json"), ctype
        info = json.loads(body)
        assert "version" in info and "running" in info and "queued" in info, info

        # the lab page loads the federated jupyter-taskrun extension, whose built assets are served
        code, ctype, html = get(f"{base}/lab", token, timeout=30)
        assert code == 200 and "text/html" in ctype, (code, ctype, html[:500])
        config = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
        assert config, html[:2000]
        page = json.loads(config.group(1))
        ours = [e for e in page.get("federated_extensions", []) if e.get("name") == "jupyter-taskrun"]
        assert ours, f"jupyter-taskrun not among {[e.get('name') for e in page.get('federated_extensions', [])]}"
        entry = f"{base}{page.get('fullLabextensionsUrl', '/lab/extensions')}/jupyter-taskrun/{ours[0]['load']}"
        code, _ctype, js = get(entry, token, timeout=30)
        assert code == 200 and "jupyter-taskrun" in js, (entry, code, js[:300])
    finally:
        # SIGTERM (jupyter's clean shutdown), then kill whatever of its session is left
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        server.wait(30)
    print(f"jupyter lab stopped with {server.returncode}; log tail:\n{tail(server_log, 10)}")
