"""`docker compose up -d face-api` without docker: the services of docker-compose.yml (plus
overrides) run as processes with their own command, environment, user and network.

Run as root inside fresh mount, network and pid namespaces (test_as_deployed.py starts
`unshare --mount --net --pid --fork python -m tests.deploy.stack ...`), so nothing here can
touch the host: every process dies with the namespace, every mount vanishes with it.

What stands in for what:
- image file system: an overlay of this machine's root (writes go to a tmpfs), in which the
  Dockerfile's non-install RUN steps run as written (useradd + install -d, `python -m export
  fetch`, prepare_backends) and its COPY sources are bind-mounted read-only at the image
  paths. Package installs (apt-get, pip) are replaced by the project's virtualenv, first on
  PATH; a unit test checks the images pin the same versions.
- container network: one network namespace per service on a bridge; /etc/hosts maps the
  service names (compose's DNS). Every service binds its ports as written (0.0.0.0:8000 for
  both triton and face-api) and its health check runs in its own namespace, as in docker.
- named volumes: empty directories, initialised like docker does (ownership of the image's
  directory when it has one, else root 0755); bind mounts as written.
- mysql:8.4: MariaDB behind tests/deploy/mysql_image.sh (the image's documented first-start
  contract). mlflow: the real `mlflow server` of the virtualenv (the image's version).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy import compose
from tests.deploy.compose import ROOT

VENV_BIN = Path(sys.executable).parent
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUBNET = "10.89.0"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


@dataclass
class Service:
    name: str
    spec: dict
    image: compose.Image | None
    ip: str
    netns_pid: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    def __init__(self, files, env: dict[str, str], work: Path, log=print):
        self.model = compose.load(files, env)
        self.work, self.log = work, log
        self.root = work / "root"
        self.services: dict[str, Service] = {}
        names = sorted(self.model["services"])
        for i, name in enumerate(names):
            spec = self.model["services"][name]
            self.services[name] = Service(name, spec, compose.service_image(spec), f"{SUBNET}.{10 + i}")

    # --- the "host": overlay root, images, network ------------------------------------------

    def prepare(self) -> None:
        scratch = self.work / "scratch"
        scratch.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(scratch))
        (scratch / "upper").mkdir()
        (scratch / "work").mkdir()
        self.root.mkdir()
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work", str(self.root))
        r = self.root
        sh("mount", "-t", "proc", "proc", str(r / "proc"))
        sh("mount", "--rbind", "/dev", str(r / "dev"))
        sh("mount", "--rbind", "/sys", str(r / "sys"))
        for tmp, opts in (("dev/shm", "size=1g"), ("run", "mode=755"), ("tmp", "mode=1777")):
            sh("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(r / tmp))
        # a checkout under /tmp (a CI clone may be) would vanish under the image's empty /tmp:
        # bind it (with its virtualenv) and ../shared back in at the same paths
        for outside in (ROOT.resolve(), (ROOT / ".." / "shared").resolve(), VENV_BIN.resolve().parent):
            if outside.is_relative_to("/tmp") and outside.exists():
                inside = r / outside.relative_to("/")
                inside.mkdir(parents=True, exist_ok=True)
                sh("mount", "--rbind", str(outside), str(inside))
        # the interpreter of the virtualenv must be reachable for the images' non-root users
        for path in (Path(os.path.realpath(sys.executable)), VENV_BIN):
            for parent in path.parents:
                target = r / parent.relative_to("/")
                if target.is_dir():
                    target.chmod(target.stat().st_mode | 0o011)
        self._hosts()
        self._network()

    def _hosts(self) -> None:
        lines = ["127.0.0.1\tlocalhost"] + [f"{s.ip}\t{s.name}" for s in self.services.values()]
        hosts = self.root / "etc" / "hosts"
        hosts.unlink(missing_ok=True)
        hosts.write_text("\n".join(lines) + "\n")
        # this process (the test client) resolves the service names the same way
        sh("mount", "--bind", str(hosts), "/etc/hosts")

    def _network(self) -> None:
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "compose0", "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", "compose0")
        sh("ip", "link", "set", "compose0", "up")

    def _netns(self, svc: Service) -> None:
        sleeper = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        for _ in range(100):  # until the sleeper is inside its own network namespace
            if os.readlink(f"/proc/{sleeper.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        svc.netns_pid = sleeper.pid
        host_end = f"v{len(svc.name)}{svc.name[:8]}"
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", str(sleeper.pid))
        sh("ip", "link", "set", host_end, "master", "compose0", "up")
        inside = ["nsenter", f"--net=/proc/{sleeper.pid}/ns/net"]
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{svc.ip}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")

    def build_images(self) -> None:
        """The image steps that shape the file system, in the overlay (see module doc)."""
        done: set[str] = set()  # api and export share their runtime stage: run it once
        for svc in self.services.values():
            img = svc.image
            if img is None:
                continue
            for sources, dest in img.copies:
                base = Path(img.workdir, dest)
                for src in sources:
                    target = base / Path(src).name if dest.endswith("/") or len(sources) > 1 else base
                    self._bind(ROOT / src, target, readonly=True)
            for run in img.runs:
                if run.split()[0] in ("apt-get", "pip") or run in done:
                    continue  # installs: the virtualenv has them
                done.add(run)
                if "export fetch" in run:
                    self._seed_source_cache(img)
                self.log(f"[build] RUN {run}")
                self._chroot_run(run, img, user="root")

    def _seed_source_cache(self, img: compose.Image) -> None:
        """docker's build cache, in effect: the packaged sources `make setup` downloaded."""
        cache = ROOT / "var" / "cache" / "wheels"
        dest = self.root / img.env["FA_SOURCE_CACHE"].lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        for f in cache.glob("*"):
            if f.is_file() and f.suffix in (".whl", ".tgz", ".gz"):
                shutil.copy2(f, dest / f.name)

    def _bind(self, source: Path, target: Path, readonly: bool = False) -> None:
        inside = self.root / str(target).lstrip("/")
        if inside.is_mount():
            return
        for parent in inside.parents:  # already provided by a directory bind above it
            if parent == self.root:
                break
            if parent.is_mount():
                return
        if source.is_dir():
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch(exist_ok=True)
        sh("mount", "--bind", str(source), str(inside))
        if readonly:
            sh("mount", "-o", "remount,bind,ro", str(inside))

    def _chroot_run(self, command: str, img: compose.Image, user: str) -> None:
        env = self._env(img, {}, user)
        subprocess.run(["chroot", "--userspec", f"{user}", str(self.root), "sh", "-c",
                        f"cd {shlex.quote(img.workdir)} && {command}"], env=env, check=True,
                       stdout=sys.stderr)

    def volumes(self) -> None:
        named = self.model.get("volumes", {})
        for name in self.order("face-api"):
            svc = self.services[name]
            for entry in svc.spec.get("volumes", []):
                source, target, *mode = entry.split(":")
                ro = "ro" in mode
                if source in named:
                    self._named_volume(source, target, svc)
                else:
                    self._bind((ROOT / source).resolve(), Path(target), readonly=ro)
            for tmp in svc.spec.get("tmpfs", []):
                inside = self.root / tmp.lstrip("/")
                inside.mkdir(parents=True, exist_ok=True)
                sh("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(inside))

    def _named_volume(self, volume: str, target: str, svc: Service) -> None:
        inside = self.root / target.lstrip("/")
        if inside.is_mount():
            return  # one volume shared by several services (model-repository)
        data = self.work / "volumes" / volume
        data.mkdir(parents=True)
        if svc.image is not None and inside.is_dir():
            # docker initialises an empty named volume from the image's directory
            st = inside.stat()
            os.chown(data, st.st_uid, st.st_gid)
            data.chmod(st.st_mode & 0o7777)
            shutil.copytree(inside, data, dirs_exist_ok=True, symlinks=True)
        elif svc.image is None and svc.name == "mysql":
            shutil.chown(data, "mysql", "mysql")  # the mysql image's /var/lib/mysql
        else:
            data.chmod(0o755)  # docker creates a missing mount point root-owned
        self._bind(data, Path(target))

    # --- services ---------------------------------------------------------------------------

    def order(self, target: str) -> list[str]:
        out: list[str] = []

        def visit(name):
            for dep in self.services[name].spec.get("depends_on", {}):
                visit(dep)
            if name not in out:
                out.append(name)
        visit(target)
        return out

    def _user(self, svc: Service) -> str:
        return svc.spec.get("user") or (svc.image.user if svc.image else "root")

    def _env(self, img: compose.Image | None, extra: dict[str, str], user: str) -> dict[str, str]:
        home = "/root"
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                home = parts[5]
        env = {"PATH": f"{VENV_BIN}:{BASE_PATH}", "HOME": home, "LANG": "C.UTF-8"}
        env.update(img.env if img else {})
        env.update(extra)
        return env

    def _preexec(self, netns_pid: int, user: str, workdir: str):
        pw = None
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                pw = (int(parts[2]), int(parts[3]))
        uid, gid = pw
        root = str(self.root)

        def run():
            fd = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY)
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            os.close(fd)
            os.chroot(root)
            os.chdir(workdir)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.setsid()
        return run

    def argv(self, svc: Service, command=None) -> list[str]:
        if svc.image is None and svc.name == "mysql":
            return ["bash", "/opt/compose-test/mysql_image.sh"]
        spec = dict(svc.spec)
        if command is not None:  # `docker compose run SERVICE COMMAND...`
            spec["command"] = command
        return compose.service_argv(spec, svc.image)

    def start(self, name: str) -> None:
        svc = self.services[name]
        self._netns(svc)
        if svc.name == "mysql" and svc.image is None:
            self._bind(Path(__file__).with_name("mysql_image.sh"), Path("/opt/compose-test/mysql_image.sh"),
                       readonly=True)
        user = self._user(svc)
        svc.env = self._env(svc.image, compose.environment(svc.spec), user)
        svc.log = self.work / f"{name}.log"
        argv = self.argv(svc)
        self.log(f"[up] {name} ({svc.ip}) as {user}: {shlex.join(argv)[:160]}")
        with open(svc.log, "ab") as log:
            svc.proc = subprocess.Popen(argv, env=svc.env, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=self._preexec(svc.netns_pid, user, self._workdir(svc)))

    def _workdir(self, svc: Service) -> str:
        return svc.spec.get("working_dir") or (svc.image.workdir if svc.image else "/")

    def run(self, name: str, command: list[str] | str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`docker compose run --rm NAME COMMAND`: a new container of the service."""
        svc = self.services[name]
        if not svc.netns_pid:
            self._netns(svc)
        user = self._user(svc)
        env = self._env(svc.image, compose.environment(svc.spec), user)
        argv = self.argv(svc, command)
        self.log(f"[run] {name}: {shlex.join(argv)[:200]}")
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=self._preexec(svc.netns_pid, user, self._workdir(svc)))

    def healthy(self, name: str) -> bool:
        svc = self.services[name]
        test = svc.spec["healthcheck"]["test"]
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        try:
            r = subprocess.run(argv, env=svc.env, capture_output=True, timeout=10,
                               preexec_fn=self._preexec(svc.netns_pid, self._user(svc), self._workdir(svc)))
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    def wait(self, name: str, condition: str, timeout: float) -> None:
        svc = self.services[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = svc.proc.poll()
            if condition == "service_completed_successfully":
                if code is not None:
                    if code != 0:
                        raise RuntimeError(f"{name} exited with {code}; see {svc.log}")
                    return
            elif code is not None:
                raise RuntimeError(f"{name} exited with {code} before it was healthy; see {svc.log}")
            elif condition == "service_started" or self.healthy(name):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{name} not {condition} after {timeout:.0f}s; see {svc.log}")

    def up(self, target: str, timeout: float = 300) -> dict[str, float]:
        """Start `target` and its dependencies in order, honouring depends_on conditions."""
        started = time.monotonic()
        times = {}
        for name in self.order(target):
            for dep, cond in self.services[name].spec.get("depends_on", {}).items():
                cond = cond.get("condition", "service_started") if isinstance(cond, dict) else "service_started"
                self.wait(dep, cond, timeout)
            self.start(name)
            times[name] = round(time.monotonic() - started, 1)
        if "healthcheck" in self.services[target].spec:
            self.wait(target, "service_healthy", timeout)
        times["healthy"] = round(time.monotonic() - started, 1)
        return times

    def down(self) -> None:
        for svc in self.services.values():
            if svc.proc and svc.proc.poll() is None:
                os.killpg(svc.proc.pid, signal.SIGTERM)
        for svc in self.services.values():
            if svc.proc:
                try:
                    svc.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(svc.proc.pid, signal.SIGKILL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--env", default="{}", help="JSON: the variables compose interpolates (.env)")
    p.add_argument("--files", nargs="+", default=["docker-compose.yml", "docker-compose.cpu.yml"])
    p.add_argument("--scenario", required=True, help="module:function run against the stack")
    args = p.parse_args(argv)
    if os.getpid() != 1 or os.geteuid() != 0:
        raise SystemExit("run as root as pid 1 of fresh namespaces: unshare --mount --net --pid --fork")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    stack = Stack(args.files, json.loads(args.env), args.work, log)
    module, func = args.scenario.split(":")
    import importlib

    scenario = getattr(importlib.import_module(module), func)
    try:
        stack.prepare()
        stack.build_images()
        stack.volumes()
        result = scenario(stack)
    finally:
        stack.down()
    (args.work / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
