"""gRPC channels to a control plane: address, TLS/mTLS from files, limits.

Plaintext is used only for unix sockets (the local relay) or when the
configuration asks for it explicitly; otherwise the channel is TLS, with
the CA/cert/key files given (mTLS when a cert and key are given) or the
system roots. Certificate files are re-read whenever a channel is made,
and `TlsFiles.fingerprint()` lets the stream notice a rotation and
reconnect with the new credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest response accepted. gRPC's own default (4 MiB) is too small for a big
mesh's CDS in one SotW response; larger than this is refused with a clear error."""

KEEPALIVE_SECONDS = 30.0
"""HTTP/2 pings: a dead control plane (or NAT dropping the flow) is noticed
without waiting for TCP. 30 s is what istiod tolerates (its min ping interval)."""


class ChannelError(ValueError):
    """A channel that cannot be made as configured (names what is wrong)."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    server_name: Optional[str] = None      # SNI and expected name, when not the address

    def __post_init__(self):
        if bool(self.cert) != bool(self.key):
            raise ChannelError("xds tls: a client certificate needs its key and the key its "
                               "certificate (set both cert and key, or neither)")

    def paths(self) -> Tuple[str, ...]:
        return tuple(p for p in (self.ca, self.cert, self.key) if p)

    def fingerprint(self) -> tuple:
        """(path, mtime, size) of each file: changes when a file is rotated."""
        out = []
        for path in self.paths():
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((path, None, None, None))
        return tuple(out)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path, what):
            if not path:
                return None
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise ChannelError(f"xds tls: cannot read the {what} {path}: "
                                   f"{exc.strerror}") from None

        return grpc.ssl_channel_credentials(root_certificates=read(self.ca, "CA bundle"),
                                            private_key=read(self.key, "client key"),
                                            certificate_chain=read(self.cert, "client cert"))


@dataclass(frozen=True)
class Target:
    """Where a stream connects and how."""

    address: str                             # host:port, dns:///host:port, unix:/path
    tls: Optional[TlsFiles] = None
    plaintext: bool = False
    token_path: Optional[str] = None         # bearer token file (Istio's projected token)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive: float = KEEPALIVE_SECONDS
    options: Sequence[tuple] = field(default_factory=tuple)
    metadata: Tuple[Tuple[str, str], ...] = ()   # the bootstrap's grpc_service initial_metadata

    def __post_init__(self):
        if not self.address:
            raise ChannelError("xds: no control plane address")
        if self.max_message_bytes < 1024:
            raise ChannelError(f"xds: max_message_bytes {self.max_message_bytes} is below 1024")

    @property
    def is_unix(self) -> bool:
        return self.address.startswith(("unix:", "unix-abstract:"))

    @property
    def secure(self) -> bool:
        return not (self.is_unix or self.plaintext)

    def fingerprint(self) -> tuple:
        files = (self.tls.fingerprint() if self.tls else ())
        return files + ((self.token_path,) if self.token_path else ())

    def call_metadata(self) -> tuple:
        """Per-stream call metadata: the configured pairs and the bearer token (re-read
        for each stream, so a rotated token is picked up at the next reconnect)."""
        pairs = tuple((k.lower(), v) for k, v in self.metadata)
        if not self.token_path:
            return pairs
        try:
            with open(self.token_path) as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ChannelError(f"xds: cannot read the token {self.token_path}: "
                               f"{exc.strerror}") from None
        return pairs + (("authorization", f"Bearer {token}"),)

    def channel_options(self) -> list:
        opts = [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.keepalive_time_ms", int(self.keepalive * 1000)),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.enable_retries", 0)]
        if self.is_unix:
            opts.append(("grpc.default_authority", "localhost"))
        if self.tls and self.tls.server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return opts + list(self.options)


def make_channel(target: Target) -> grpc.aio.Channel:
    if target.secure:
        creds = (target.tls or TlsFiles()).credentials()
        return grpc.aio.secure_channel(target.address, creds, target.channel_options())
    return grpc.aio.insecure_channel(target.address, target.channel_options())


def parse_address(text: str) -> str:
    """Accept host:port, [v6]:port, unix:/path, unix:///path, or a bare /path (unix)."""
    text = text.strip()
    if text.startswith("/"):
        return "unix:" + text
    if text.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ChannelError(f"xds address {text!r}: expected HOST:PORT or unix:/PATH")
    return text
