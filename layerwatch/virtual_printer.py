"""A real OctoPrint with its bundled virtual printer, on loopback, for tests and trials.

OctoPrint pins old Flask/Tornado, so it lives in its own virtual environment (created once
and cached), and LayerWatch talks to it over HTTP only — exactly as to a printer on the shop
floor. The virtual printer logs every G-code line it receives, which is how a test proves
that a pause really stopped the moves.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from layerwatch.core.embedded import free_port

OCTOPRINT_VERSION = "1.11.8"
MOONRAKER_VERSION = "0.11.0"

CONFIG_YAML = """\
server:
  host: 127.0.0.1
  firstRun: false
  onlineCheck: {enabled: false}
  pluginBlacklist: {enabled: false}
plugins:
  _disabled: [announcements, softwareupdate, pluginmanager, tracking, errortracking,
              discovery, health_check]
  virtual_printer: {enabled: true}
serial: {port: VIRTUAL, baudrate: 115200, autoconnect: false}
gcodeAnalysis: {runAt: never}
"""


class VirtualPrinterError(RuntimeError):
    pass


def ensure_tool_venv(venv: Path, requirement: str, executable: str) -> Path:
    """Create (once) a venv holding ``requirement``; returns the path of ``executable``."""
    exe = venv / "bin" / executable
    if exe.exists():
        return exe
    tmp = venv.with_name(venv.name + ".partial")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True)
    res = subprocess.run(
        [str(tmp / "bin" / "pip"), "install", "--quiet", requirement],
        capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        raise VirtualPrinterError(f"installing {requirement} failed:\n{res.stderr[-2000:]}")
    # venv scripts hard-code their interpreter path: rebuild in place under the final name.
    tmp.rename(venv)
    subprocess.run([sys.executable, "-m", "venv", "--upgrade", str(venv)], check=True)
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            with contextlib.suppress(UnicodeDecodeError):
                text = script.read_text()
                if str(tmp) in text:
                    script.write_text(text.replace(str(tmp), str(venv)))
    return exe


@dataclass
class VirtualPrinter:
    """A running OctoPrint; ``url`` and ``api_key`` are what a user would configure."""

    url: str
    api_key: str
    basedir: Path
    proc: subprocess.Popen

    @property
    def serial_log(self) -> Path:
        return self.basedir / "logs" / "plugin_virtual_printer_serial.log"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Api-Key": self.api_key}, timeout=10)

    def connect(self, timeout: float = 20.0) -> None:
        with self.client() as c:
            c.post(
                "/api/connection",
                json={"command": "connect", "port": "VIRTUAL", "baudrate": 115200},
            ).raise_for_status()
            self.wait_state(c, ("Operational",), timeout)

    def print_gcode(self, name: str, gcode: str) -> None:
        with self.client() as c:
            r = c.post(
                "/api/files/local",
                files={"file": (name, gcode.encode(), "application/octet-stream")},
                data={"select": "true", "print": "true"},
            )
            r.raise_for_status()
            self.wait_state(c, ("Printing",), 20)

    def job(self) -> dict:
        with self.client() as c:
            return c.get("/api/job").raise_for_status().json()

    @staticmethod
    def wait_state(c: httpx.Client, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = c.get("/api/job").json().get("state", "")
            if any(state.startswith(s) for s in states):
                return state
            time.sleep(0.1)
        raise VirtualPrinterError(f"printer state {state!r}, expected one of {states}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_virtual_printer(venv: Path, basedir: Path, timeout: float = 60.0) -> VirtualPrinter:
    """Start OctoPrint with the virtual printer in ``basedir`` on a free loopback port."""
    exe = ensure_tool_venv(venv, f"octoprint=={OCTOPRINT_VERSION}", "octoprint")
    basedir.mkdir(parents=True, exist_ok=True)
    (basedir / "config.yaml").write_text(CONFIG_YAML)
    api_key = secrets.token_hex(16)
    root = ["--iknowwhatimdoing"] if os.geteuid() == 0 else []
    subprocess.run(
        [str(exe), "--basedir", str(basedir), *root, "user", "add", "--password",
         secrets.token_hex(8), "--admin", "layerwatch"],
        check=True, capture_output=True,
    )  # fmt: skip
    users = basedir / "users.yaml"
    users.write_text(users.read_text().replace("apikey: null", f"apikey: {api_key}", 1))
    port = free_port()
    log = open(basedir / "serve.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [str(exe), "serve", "--basedir", str(basedir), "--host", "127.0.0.1", "--port",
         str(port), *root],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    printer = VirtualPrinter(f"http://127.0.0.1:{port}", api_key, basedir, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VirtualPrinterError(
                f"OctoPrint exited ({proc.returncode}):\n"
                f"{(basedir / 'serve.log').read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError), printer.client() as c:
            if c.get("/api/version").status_code == 200:
                return printer
        time.sleep(0.3)
    printer.stop()
    raise VirtualPrinterError(f"OctoPrint did not answer within {timeout:.0f}s")


def gcode_print(layers: int = 20, moves_per_layer: int = 12, layer_height: float = 0.3) -> str:
    """A print long enough to pause in: square moves of 50 mm at F3000 on each layer."""
    lines = ["G28", "G90", "M83", "G1 Z0.3 F600"]
    for k in range(layers):
        z = layer_height * (k + 1)
        lines.append(f";LAYER:{k}")
        lines.append(f"G1 Z{z:.2f} F600")
        for i in range(moves_per_layer):
            x = 50 + (50 if i % 4 in (1, 2) else 0)
            y = 50 + (50 if i % 4 in (2, 3) else 0)
            lines.append(f"G1 X{x} Y{y} E1.0 F3000")
    lines.append("M84")
    return "\n".join(lines) + "\n"


MOONRAKER_CONF = """\
[server]
host: 127.0.0.1
port: {port}
klippy_uds_address: {datadir}/comms/klippy.sock

[authorization]
trusted_clients:
  127.0.0.0/8

[announcements]
enable_moonlight: False
dev_mode: True

[machine]
provider: none
"""


@dataclass
class MoonrakerServer:
    """A real Moonraker without Klipper: print actions answer 503 "Klippy Host not
    connected", which is the error path a test can exercise (Klipper is not installable)."""

    url: str
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_moonraker(venv: Path, datadir: Path, timeout: float = 60.0) -> MoonrakerServer:
    exe = ensure_tool_venv(venv, f"moonraker=={MOONRAKER_VERSION}", "moonraker")
    port = free_port()
    (datadir / "config").mkdir(parents=True, exist_ok=True)
    (datadir / "config" / "moonraker.conf").write_text(
        MOONRAKER_CONF.format(port=port, datadir=datadir)
    )
    log = open(datadir / "serve.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [str(exe), "-d", str(datadir), "-n"], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    server = MoonrakerServer(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VirtualPrinterError(f"Moonraker exited ({proc.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/server/info", timeout=2).status_code == 200:
                return server
        time.sleep(0.3)
    server.stop()
    raise VirtualPrinterError(f"Moonraker did not answer within {timeout:.0f}s")
