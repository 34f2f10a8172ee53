"""Notebook kernels forked from a process that has already imported torch and transformers.

Every notebook of the course starts the same way: a fresh Python kernel
imports torch and transformers and loads the course model. On 2 cores that
is about 9 s before the first line of the lesson runs (3 s to start the
kernel, 6 s of imports), and the test suite starts 43 kernels. A
:class:`KernelServer` pays for the imports once; each kernel is then a
``fork`` of it, ready in a fraction of a second.

A forked kernel computes exactly what a fresh one computes: the same
interpreter, environment (the server refuses a kernel whose environment
differs from its own, and the launcher then starts an ordinary one), working
folder and ``sys.path``; torch's and NumPy's unseeded random streams start
from the operating system's entropy, as they do on import. Nothing has run
in parallel in the server before the fork (imports only), so torch's thread
pool is created in the kernel itself, with the same number of threads. The test suite checks
this where it counts: every notebook re-executes to its stored outputs, which
ordinary kernels wrote (``python -m llmsforme.notebooks run``).

This file runs as a script and imports nothing of the package at its top,
so that a kernel launch costs no import of torch (the server then preloads
:data:`PRELOAD`, the package's own modules among them)::

    python notebook_kernels.py serve SOCKET        # the server (KernelServer starts it)
    python notebook_kernels.py kernel SOCKET -f {connection_file}   # a kernel spec's argv

Use (as ``tests/test_notebooks.py`` does)::

    with KernelServer(env) as server:
        os.environ["JUPYTER_PATH"] = str(server.kernel_spec_folder)
        ...  # run notebooks: their "python3" kernels come from the server

Unix only (``fork``, file descriptors passed over a Unix socket, in a
folder only its user can open: whoever connects gets a kernel); whenever the
server is not there, the launcher starts an ordinary kernel.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: What the server imports before it forks: what the notebooks import first, and the
#: heavier libraries of each part (peft, diffusers, sentence-transformers: 2 to 5 s each).
#: Nothing that imports matplotlib: its backend is chosen on import, from what ipykernel
#: sets in the kernel.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.tokenization_utils_tokenizers",
    "safetensors.torch",
    "numpy",
    "peft",
    "diffusers",
    "sentence_transformers",
    "openai",
    "llmsforme.model_source",
    "llmsforme.decoding",
    "llmsforme.chat",
    "llmsforme.server",
)
#: Not compared between environments: what jupyter_client sets per kernel, the path
#: that points the kernel spec lookup at the server (only Jupyter reads them), and
#: the name of the running test, which pytest changes at each test.
PER_KERNEL = ("JPY_", "JUPYTER_PATH", "PYTEST_CURRENT_TEST")
_HEADER = struct.Struct("!I")


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    packet = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [packet], fds)
    else:
        sock.sendall(packet)


def _receive(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (``None`` at end of stream) and the file descriptors that came with it."""
    fds: list[int] = []
    if with_fds:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
    else:
        data = sock.recv(1 << 20)
    if not data:
        return None, fds
    size = _HEADER.unpack(data[: _HEADER.size])[0]
    data = data[_HEADER.size :]
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None, fds
        data += more
    return json.loads(data), fds


def _comparable(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(PER_KERNEL)}


# --- the server ------------------------------------------------------------------------------


def serve(path: str, idle_timeout: float = 1800.0) -> None:
    """Import :data:`PRELOAD`, then fork a kernel for each launcher that connects to ``path``."""
    import importlib

    env = _comparable(dict(os.environ))
    for name in PRELOAD:
        importlib.import_module(name)
    if "matplotlib" in sys.modules:
        raise RuntimeError("a preloaded module imported matplotlib: kernels would get the server's backend")
    # What the imports put in the environment, as they would in a kernel that ran them.
    set_by_imports = {k: v for k, v in os.environ.items() if env.get(k) != v}
    base_path = sys.path[:]  # this file's folder was taken off at start
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    clients: dict[socket.socket, int | None] = {}  # launcher -> its kernel's pid

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    try:
        _serve(listener, clients, env, set_by_imports, base_path, idle_timeout)
    finally:  # the kernels end with the server
        for pid in clients.values():
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


def _serve(listener: socket.socket, clients: dict[socket.socket, int | None], env: dict[str, str],
           set_by_imports: dict[str, str], base_path: list[str], idle_timeout: float) -> None:
    exited: dict[int, int] = {}
    last_active = time.monotonic()
    while True:
        readable, _, _ = select.select([listener, *clients], [], [], 0.2)
        while True:  # reap the kernels that ended; tell their launchers
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited[pid] = os.waitstatus_to_exitcode(status)
        for client, pid in list(clients.items()):
            if pid is not None and pid in exited:
                try:
                    _send(client, {"exit": exited.pop(pid)})
                except OSError:
                    pass
                client.close()
                del clients[client]
        if clients:
            last_active = time.monotonic()
        elif time.monotonic() - last_active > idle_timeout:
            return  # left behind by a test run that died: don't stay forever
        for sock in readable:
            if sock is listener:
                client, _ = listener.accept()
                clients[client] = None
                continue
            try:
                request, fds = _receive(sock, with_fds=clients[sock] is None)
            except OSError:
                request, fds = None, []
            if request is None:  # the launcher is gone (killed): its kernel goes too
                pid = clients.pop(sock)
                if pid is not None and pid not in exited:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                sock.close()
                continue
            if "signal" in request:  # relayed by the launcher (an interrupt, say)
                pid = clients[sock]
                if pid is not None:
                    try:
                        os.kill(pid, int(request["signal"]))
                    except OSError:
                        pass
                continue
            differs = sorted(k for k in set(env) | set(_comparable(request["env"]))
                             if env.get(k) != request["env"].get(k))
            if differs or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"ordinary": f"environment differs from the server's in {differs}"})
                continue
            pid = os.fork()
            if pid == 0:  # the kernel: never returns into this loop
                code = 1
                try:
                    listener.close()
                    for other in clients:
                        other.close()
                    code = _become_kernel(request, fds, set_by_imports, base_path)
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            clients[sock] = pid
            _send(sock, {"pid": pid})


def _become_kernel(request: dict[str, Any], fds: list[int], set_by_imports: dict[str, str],
                   base_path: list[str]) -> int:
    """In the forked child: take the launcher's place, then run ipykernel_launcher."""
    import runpy

    import numpy
    import torch

    os.setsid()  # its own process group, as jupyter_client gives a kernel
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(set_by_imports)
    # Seeded from the operating system, as on import: not the server's state, shared by every fork.
    # (Python's random module does this itself after a fork.)
    torch.seed()
    numpy.random.seed()
    sys.path[:] = [os.getcwd(), *base_path]  # as `python -m ipykernel_launcher` starts
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    try:
        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    return 0


# --- the launcher (a kernel spec's argv) -------------------------------------------------------


def launch(path: str, argv: list[str]) -> int:
    """Ask the server at ``path`` for a kernel and stand in for it; an ordinary kernel if it can't."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=[0, 1, 2])
        reply, _ = _receive(sock)
    except OSError as error:
        reply = {"ordinary": f"no kernel server at {path}: {error}"}
    if reply is None or "ordinary" in reply:
        sock.close()
        print(f"notebook_kernels: an ordinary kernel ({(reply or {}).get('ordinary', 'server gone')})",
              file=sys.stderr, flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *argv])

    def relay(signum: int, _frame: Any) -> None:
        _send(sock, {"signal": signum})

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, relay)
    while True:
        try:
            message, _ = _receive(sock)
        except InterruptedError:
            continue
        if message is None:
            return 1
        if "exit" in message:
            return int(message["exit"])


# --- starting and stopping the server --------------------------------------------------------


class KernelServer:
    """The server as a context manager, with a kernel spec named ``python3`` that launches from it.

    ``env`` is the kernels' environment: the server runs in it, and only
    kernels started with the same environment (:data:`PER_KERNEL` keys
    aside) are forked. Put :attr:`kernel_spec_folder` first on
    ``JUPYTER_PATH``.
    """

    def __init__(self, env: dict[str, str], *, ready_timeout: float = 120.0) -> None:
        if os.name != "posix" or not hasattr(socket, "send_fds"):
            raise RuntimeError("forked kernels need a Unix system")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise TypeError("env must be a dict of str to str (an environment, such as dict(os.environ))")
        if isinstance(ready_timeout, bool) or not isinstance(ready_timeout, (int, float)) or not ready_timeout > 0:
            raise ValueError(f"ready_timeout must be a number of seconds > 0, got {ready_timeout!r}")
        self.env = dict(env)
        self.ready_timeout = ready_timeout
        self._folder = tempfile.TemporaryDirectory(prefix="llmsforme-kernels-")
        root = Path(self._folder.name)
        self.socket_path = str(root / "server.sock")
        self.kernel_spec_folder = root / "jupyter"
        spec = self.kernel_spec_folder / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, str(Path(__file__).resolve()), "kernel", self.socket_path,
                     "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel, forked from a preloaded process)",
            "language": "python",
            "metadata": {"debugger": True},
        }, indent=1))
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> KernelServer:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", self.socket_path],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], self.ready_timeout)
        line = self.process.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the kernel server did not start within {self.ready_timeout} s")
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        """End the server and any kernel it still runs."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        self._folder.cleanup()

    def __enter__(self) -> KernelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    del sys.path[0]  # this file's folder is the package's: its modules must not shadow others
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "kernel":
        sys.exit(launch(sys.argv[2], sys.argv[3:]))
    else:
        sys.exit(__doc__)
