"""Load, attach and pin the datapath; adopt it after a restart; remove it.

The cgroup programs are attached with bpf links pinned under the pin
directory, and sk_msg is attached to the pinned sockhash: the datapath
keeps working when the agent exits or crashes, and a restarted agent finds
it by its pins instead of loading it again. Nothing is attached that is not
pinned, so `uninstall` can always find and remove what we own.
"""

import hashlib
import json
import os
import pathlib
import re
import time

from . import host, libbpf, upgrade
from .maps import KINDS, SOCKHASHES
from .settings import DEFAULT_PIN_DIR, Settings  # noqa: F401  (re-exported)
from .sources import PROGRAMS, source_dir

# program -> (bcc program type name, attach type)
PROGRAM_TYPES = {
    "connect4": ("CGROUP_SOCK_ADDR", libbpf.ATTACH["connect4"]),
    "getpeername4": ("CGROUP_SOCK_ADDR", libbpf.ATTACH["getpeername4"]),
    "sockops": ("SOCK_OPS", libbpf.ATTACH["sockops"]),
    "sk_msg": ("SK_MSG", libbpf.ATTACH["sk_msg"]),
    "connect6": ("CGROUP_SOCK_ADDR", libbpf.ATTACH["connect6"]),
    "getpeername6": ("CGROUP_SOCK_ADDR", libbpf.ATTACH["getpeername6"]),
}
# attach order: a steered socket must find its peername and sockops hooks
CGROUP_PROGRAMS = ("sockops", "getpeername4", "getpeername6", "connect4", "connect6")
_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layout_digest() -> str:
    """Of bpf/lib/layout.h: what the maps' keys and values look like."""
    return hashlib.sha256((source_dir() / "lib" / "layout.h").read_bytes()).hexdigest()[:16]


class Datapath:
    def __init__(self, settings: Settings = None):
        self.s = settings or Settings()
        self.pins = pathlib.Path(self.s.pin_dir)
        self._bpf = None

    # -- state -------------------------------------------------------------

    def pinned(self) -> dict:
        """Which of our pins exist."""
        out = {f"map/{m}": (self.pins / m).exists() for m in KINDS}
        for p in PROGRAMS:
            out[f"prog/{p}"] = (self.pins / "progs" / p).exists()
        for p in CGROUP_PROGRAMS:
            out[f"link/{p}"] = (self.pins / "links" / p).exists()
        return out

    def is_up(self) -> bool:
        return all(self.pinned().values())

    def state(self) -> dict:
        try:
            return json.loads(self.s.state_file.read_text())
        except (OSError, ValueError):
            return {}

    # -- build -------------------------------------------------------------

    def cflags(self) -> list:
        src = source_dir()
        flags = [f"-I{src}", f'-DNM_PIN_DIR="{self.s.pin_dir}"']
        flags += [f"-D{k}={v}" for k, v in sorted(self.s.defines.items())]
        if host.has_capability(host.CAP_PERFMON):
            # bpf_get_current_comm in cgroup programs needs CAP_PERFMON (6.x): without it,
            # trace events carry the pid only and readers look the name up in /proc
            flags.append("-DNM_TRACE_COMM=1")
        return flags

    def bundle(self) -> str:
        """One translation unit of every program, its lib/ headers inlined.

        bcc takes only functions of the main file as programs and rewrites
        map method calls (`services.lookup(...)`) only there, so the sources
        are amalgamated (each header once, in include order), not included.
        """
        src, seen, out = source_dir(), set(), []

        def inline(path):
            for line in path.read_text().splitlines():
                m = _LOCAL_INCLUDE.match(line)
                if not m:
                    out.append(line)
                    continue
                target = (path.parent / m.group(1)).resolve()
                if target not in seen:
                    seen.add(target)
                    out.append(f"/* --- {target.relative_to(src)} --- */")
                    inline(target)

        for p in PROGRAMS:
            out.append(f"/* --- {p}.c --- */")
            inline(src / f"{p}.c")
        return "\n".join(out) + "\n"

    def source_digest(self) -> str:
        h = hashlib.sha256()
        src = source_dir()
        for f in sorted(src.rglob("*.[ch]")):
            h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
        h.update(" ".join(self.cflags()).encode())
        return h.hexdigest()[:16]

    def compile(self):
        """Compile and load every program (maps come from, or go to, the pins)."""
        from .bcc_import import import_bcc

        host.ensure_kernel_headers()
        host.ensure_bpffs(os.path.dirname(self.s.pin_dir.rstrip("/")) or "/sys/fs/bpf")
        self.pins.mkdir(parents=True, exist_ok=True)
        bcc = import_bcc()
        b = bcc.BPF(text=self.bundle(), cflags=self.cflags())
        progs = {}
        for name in PROGRAMS:
            ptype, attach = PROGRAM_TYPES[name]
            kwargs = {"attach_type": attach} if ptype == "CGROUP_SOCK_ADDR" else {}
            progs[name] = b.load_func(name, getattr(bcc.BPF, ptype), **kwargs)
        self._bpf = b
        return b, progs

    # -- up / adopt / reload -------------------------------------------------

    def up(self, reload=False) -> dict:
        """Load, attach and pin; or adopt what is pinned. Idempotent.

        A datapath pinned by another version (a map whose layout or size is
        not the current one, a program it did not have) is reloaded in place:
        maps re-created with their entries copied (agent/bpf/upgrade.py),
        programs swapped under their links, new ones attached."""
        stale = upgrade.stale_maps(self.pins, self.s.defines) if self.pins.is_dir() else {}
        if self.is_up() and not reload and not stale:
            return {"action": "adopted", **self.state()}
        running = any(v for k, v in self.pinned().items() if k.startswith("link/"))
        cgroup_root = self.s.cgroup_root or host.ensure_cgroup2()
        try:
            return self._load_and_attach(cgroup_root, "reloaded" if running else "loaded",
                                         stale)
        except Exception:
            if not running:   # leave nothing half attached behind
                self.uninstall()
            raise

    def _load_and_attach(self, cgroup_root, action, stale):
        maps = upgrade.MapUpgrade(self.pins, stale)
        try:
            try:
                maps.set_aside()
                _, progs = self.compile()
                upgraded = maps.copy()
                created = self._attach_new(progs, cgroup_root)
            except Exception:
                maps.rollback()     # a running datapath keeps its maps and programs
                raise
            self._swap_existing(progs, created)
            return self._finish(cgroup_root, action, upgraded)
        finally:
            maps.close()

    def _attach_new(self, progs, cgroup_root) -> list:
        """sk_msg on the sockhashes (before anything can add a socket), then
        the links the datapath does not have yet (all of them on a first
        load): the steps that can be refused, by an exclusive program in the
        way. Undone here if one is; returns the links created."""
        (self.pins / "progs").mkdir(exist_ok=True)
        (self.pins / "links").mkdir(exist_ok=True)
        self._attach_sk_msg(progs["sk_msg"].fd)
        created = []
        cg_fd = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in CGROUP_PROGRAMS:
                if not (self.pins / "links" / name).exists():
                    self._create_link(name, progs[name].fd, cg_fd)
                    created.append(name)
        except Exception:
            for name in created:
                self._remove_link(name)
            running = self.pins / "progs" / "sk_msg"
            if running.exists():        # put the running version's sk_msg back
                fd = libbpf.obj_get(running)
                try:
                    self._attach_sk_msg(fd)
                finally:
                    os.close(fd)
            raise
        finally:
            os.close(cg_fd)
        return created

    def _attach_sk_msg(self, prog_fd):
        for name in SOCKHASHES:
            map_fd = libbpf.obj_get(self.pins / name)
            try:
                libbpf.check(libbpf.lib().bpf_prog_attach(prog_fd, map_fd,
                                                          libbpf.ATTACH["sk_msg"], 0),
                             f"attach sk_msg to {name}")
            finally:
                os.close(map_fd)

    def _swap_existing(self, progs, created):
        """The new programs under the links that were there already
        (bpf_link_update: no moment without a program), then every pin."""
        for name in CGROUP_PROGRAMS:
            if name in created:
                continue
            link = libbpf.obj_get(self.pins / "links" / name)
            try:
                libbpf.check(libbpf.lib().bpf_link_update(link, progs[name].fd, libbpf.ffi.NULL),
                             f"update link {name}")
            finally:
                os.close(link)
        for name in PROGRAMS:
            self._pin_prog(name, progs[name].fd)

    def _finish(self, cgroup_root, action, upgraded) -> dict:
        state = {"cgroup_root": cgroup_root, "pin_dir": str(self.pins),
                 "source_digest": self.source_digest(), "cflags": self.cflags(),
                 "layout_digest": layout_digest(), "loaded_at": time.time()}
        self.s.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.s.state_file.write_text(json.dumps(state, indent=1))
        self._bpf.cleanup()    # our fds go; pins and links keep everything
        self._bpf = None
        out = {"action": action, **state}
        if upgraded:
            out["upgraded_maps"] = upgraded
        return out

    def _pin_prog(self, name, fd):
        path = self.pins / "progs" / name
        if path.exists():
            path.unlink()
        libbpf.obj_pin(fd, path)

    def _create_link(self, name, prog_fd, cg_fd):
        attach = PROGRAM_TYPES[name][1]
        link = libbpf.check(libbpf.lib().bpf_link_create(prog_fd, cg_fd, attach,
                                                         libbpf.ffi.NULL),
                            f"attach {name} to the cgroup")
        try:
            libbpf.obj_pin(link, self.pins / "links" / name)
        finally:
            os.close(link)

    def _remove_link(self, name) -> bool:
        path = self.pins / "links" / name
        if not path.exists():
            return False
        try:
            fd = libbpf.obj_get(path)
            libbpf.lib().bpf_link_detach(fd)
            os.close(fd)
        finally:
            path.unlink()
        return True

    # -- uninstall ---------------------------------------------------------

    def uninstall(self) -> list:
        """Detach and unpin everything we own; returns what was removed."""
        removed = []
        for name in reversed(CGROUP_PROGRAMS):
            if self._remove_link(name):
                removed.append(f"link/{name}")
        sk_msg = self.pins / "progs" / "sk_msg"
        for name in SOCKHASHES:
            sock_pairs = self.pins / name
            if sk_msg.exists() and sock_pairs.exists():
                pfd, mfd = libbpf.obj_get(sk_msg), libbpf.obj_get(sock_pairs)
                libbpf.lib().bpf_prog_detach2(pfd, mfd, libbpf.ATTACH["sk_msg"])
                os.close(pfd)
                os.close(mfd)
        for sub in ("progs", "links"):
            d = self.pins / sub
            if d.is_dir():
                for f in d.iterdir():
                    f.unlink()
                    removed.append(f"{sub[:-1]}/{f.name}")
                d.rmdir()
        if self.pins.is_dir():
            for f in self.pins.iterdir():
                f.unlink()
                removed.append(f"map/{f.name}")
            self.pins.rmdir()
        try:
            self.s.state_file.unlink()
        except FileNotFoundError:
            pass
        return removed
