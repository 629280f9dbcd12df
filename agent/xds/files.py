"""xds-serve's resources: YAML/JSON files in a directory, watched for changes.

Each *.yaml / *.yml / *.json file (subdirectories included, dot-files
skipped) holds resources in Envoy's JSON shape with an "@type": one
resource, a list of them, several YAML documents, or a DiscoveryResponse-
like mapping with a `resources:` list (Envoy's file-based xDS shape).
Versions are content hashes: the same files give the same versions on every
host and every restart, so a restarted xds-serve pushes nothing new.

A file that fails to parse keeps the resources it had before (last good per
file) and its error is reported; a resource name defined in two files is an
error naming both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import yaml
from google.protobuf import any_pb2

from .config_api import decode
from .served import ServedResources, content_version, set_version
from .types import APPLY_ORDER, BY_SHORT

log = logging.getLogger("nodemesh.xds.files")

SUFFIXES = (".yaml", ".yml", ".json")
POLL_SECONDS = 1.0
MAX_FILE_BYTES = 64 * 1024 * 1024


class FileError(ValueError):
    pass


@dataclass
class FileResources:
    mtime: Tuple[int, int] = (0, 0)
    resources: List[Tuple[str, str, any_pb2.Any]] = field(default_factory=list)  # type, name, Any
    error: Optional[str] = None


def _documents(path: str) -> list:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise FileError(f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".json"):
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _items(doc) -> list:
    if isinstance(doc, list):
        return [i for d in doc for i in _items(d)]
    if isinstance(doc, dict) and "@type" not in doc and isinstance(doc.get("resources"), list):
        return doc["resources"]
    return [doc]


def _type_url(raw: str) -> str:
    if raw in BY_SHORT:
        return BY_SHORT[raw]
    return raw if raw.startswith("type.googleapis.com/") else "type.googleapis.com/" + raw


def parse_file(path: str) -> List[Tuple[str, str, any_pb2.Any]]:
    from .config_api import resource_name

    out = []
    for i, item in enumerate(i for d in _documents(path) for i in _items(d)):
        if not isinstance(item, dict) or "@type" not in item:
            raise FileError(f"resource #{i}: a mapping with an \"@type\" is expected")
        type_url = _type_url(str(item["@type"]))
        try:
            msg = decode(type_url, item)
        except Exception as exc:   # noqa: BLE001 - names the resource and the reason
            label = item.get("name") or item.get("cluster_name") or f"#{i}"
            raise FileError(f"resource {label!r} ({type_url.rsplit('.', 1)[-1]}): {exc}") \
                from None
        payload = any_pb2.Any()
        payload.Pack(msg)
        out.append((payload.type_url, resource_name(msg), payload))
    return out


class ResourceDir:
    """The directory's resources, reloaded file by file when files change."""

    def __init__(self, directory: str, served: Optional[ServedResources] = None):
        if not os.path.isdir(directory):
            raise FileError(f"{directory}: not a directory")
        self.directory = directory
        self.served = served or ServedResources(epoch="files")
        self.files: Dict[str, FileResources] = {}
        self.errors: Dict[str, str] = {}
        self.loads = 0

    def _scan(self) -> Dict[str, Tuple[int, int]]:
        found = {}
        for root, dirs, names in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if name.startswith(".") or not name.endswith(SUFFIXES):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                found[path] = (st.st_mtime_ns, st.st_size)
        return found

    def reload(self) -> bool:
        """Re-read changed files and publish; True when the served resources changed."""
        found, dirty = self._scan(), False
        for path in set(self.files) - set(found):
            del self.files[path]
            self.errors.pop(path, None)
            dirty = True
        for path, mtime in found.items():
            fr = self.files.get(path)
            if fr is not None and fr.mtime == mtime:
                continue
            fr = self.files.setdefault(path, FileResources())
            fr.mtime = mtime
            dirty = True
            try:
                fr.resources, fr.error = parse_file(path), None
                self.errors.pop(path, None)
            except (FileError, OSError, ValueError, yaml.YAMLError) as exc:
                fr.error = self.errors[path] = str(exc)
                log.error("xds-serve: %s: %s (keeping its previous resources)", path, exc)
        return self._publish() if dirty else False

    def _publish(self) -> bool:
        self.loads += 1
        by_type: Dict[str, Dict[str, tuple]] = {}
        owner: Dict[Tuple[str, str], str] = {}
        for path in sorted(self.files):
            for type_url, name, payload in self.files[path].resources:
                key = (type_url, name)
                if key in owner:
                    msg = f"{type_url.rsplit('.', 1)[-1]} {name!r} is also defined in {owner[key]}"
                    self.errors[path] = msg
                    log.error("xds-serve: %s: %s (first definition wins)", path, msg)
                    continue
                owner[key] = path
                by_type.setdefault(type_url, {})[name] = (content_version(payload), payload)
        changed = False
        for type_url in list(APPLY_ORDER) + [t for t in by_type if t not in APPLY_ORDER]:
            resources = by_type.get(type_url, {})
            if not resources and type_url not in self.served.tables:
                continue
            version = set_version((n, v) for n, (v, _) in resources.items())
            changed |= self.served.replace(type_url, resources, type_version=version)
        return changed

    async def watch(self, interval: float = POLL_SECONDS):
        """Poll mtimes: works on every filesystem (ConfigMap symlink swaps included)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if self.reload():
                    log.info("xds-serve: resources changed, pushed: %s",
                             {t.rsplit('.', 1)[-1]: n for t, n in self.served.counts().items()})
            except Exception:   # noqa: BLE001 - keep serving the last good set
                log.exception("xds-serve: reloading %s failed", self.directory)

    def status(self) -> dict:
        return {"directory": self.directory, "files": len(self.files), "loads": self.loads,
                "errors": dict(self.errors), "resources": self.served.counts()}
