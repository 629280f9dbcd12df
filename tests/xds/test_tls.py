"""TLS and mTLS to the control plane from files, reloaded on rotation; plaintext only on request."""

from __future__ import annotations

import os
import shutil
import subprocess

import grpc
import pytest

from agent.xds.applier import Applier
from agent.xds.channel import ChannelError, Target, TlsFiles
from agent.xds.client import AdsConfig, XdsClient
from agent.xds.node import build_node
from agent.xds.served import ServedResources, content_version
from agent.xds.server import XdsServer

from . import fixtures as f
from .fixtures import CLUSTER
from .test_stream import until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def make_cert(d, ca, name, san):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_cert(d, "ca", "istiod", "DNS:istiod.istio-system.svc,IP:127.0.0.1")
    make_cert(d, "ca", "node-1", "DNS:node-1")
    make_cert(d, "ca", "node-2", "DNS:node-2")
    return d


def served_one():
    served = ServedResources()
    m = f.pack(f.cluster(1, eds=False))
    served.update(CLUSTER, {"c-1": (content_version(m), m)})
    return served


def server_creds(pki):
    return grpc.ssl_server_credentials(
        [((pki / "istiod.key").read_bytes(), (pki / "istiod.crt").read_bytes())],
        root_certificates=(pki / "ca.crt").read_bytes(), require_client_auth=True)


def test_mtls_and_certificate_rotation(run_default, pki, tmp_path):
    live = tmp_path / "certs"
    live.mkdir()
    for name in ("ca.crt", "node-1.crt", "node-1.key"):
        shutil.copy(pki / name, live / name.replace("node-1", "client"))

    async def main():
        server = XdsServer(served_one())
        addr = await server.start("127.0.0.1:0", credentials=server_creds(pki))
        tls = TlsFiles(ca=str(live / "ca.crt"), cert=str(live / "client.crt"),
                       key=str(live / "client.key"), server_name="istiod.istio-system.svc")
        applier = Applier()
        client = XdsClient(applier, build_node(), AdsConfig(Target(addr, tls=tls)),
                           backoff_base=0.05, backoff_cap=0.2, tls_poll=0.1)
        await client.start()
        try:
            await until(lambda: "c-1" in applier.serving_snapshot().clusters, what="over mTLS")
            await until(lambda: server.sessions)
            assert next(iter(server.sessions)).info.identity == "node-1"
            # rotation: new files in place; the client reconnects with them
            for src, dst in (("node-2.crt", "client.crt"), ("node-2.key", "client.key")):
                tmp = live / (dst + ".new")
                shutil.copy(pki / src, tmp)
                os.replace(tmp, live / dst)
            stream = client.streams["ads"]
            await until(lambda: stream.stats.tls_reloads == 1, what="reload")
            await until(lambda: any(s.info.identity == "node-2" for s in server.sessions),
                        what="new identity")
            assert stream.stats.connects == 2
        finally:
            await client.stop()
            await server.stop()
    run_default(main())


def test_tls_is_the_default_and_plaintext_needs_asking(run_default, pki):
    async def main():
        server = XdsServer(served_one())
        addr = await server.start("127.0.0.1:0")            # a plaintext server
        applier = Applier()
        client = XdsClient(applier, build_node(),
                           AdsConfig(Target(addr, tls=TlsFiles(ca=str(pki / "ca.crt")))),
                           backoff_base=0.05, backoff_cap=0.1)
        await client.start()
        try:
            await until(client.failed.is_set, what="TLS to a plaintext server fails")
            assert not applier.serving_snapshot().clusters
        finally:
            await client.stop()
            await server.stop()
        assert Target(addr).secure and not Target(addr, plaintext=True).secure
        assert not Target("unix:/run/nodemesh/xds.sock").secure
    run_default(main())


def test_bad_tls_configuration_names_the_problem(tmp_path):
    with pytest.raises(ChannelError, match="needs its key"):
        TlsFiles(cert="/x.crt")
    tls = TlsFiles(ca=str(tmp_path / "missing.crt"))
    with pytest.raises(ChannelError, match="cannot read the CA bundle"):
        tls.credentials()
