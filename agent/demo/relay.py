"""A plain L4 relay that stands in for the proxy in the demo.

role=local: learns each client's service from the datapath's accept record
(what the real proxy does on accept). role=remote: from the port it was
reached on. Either way it forwards bytes to that service's backend.
"""

import argparse
import asyncio
import json
import os
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(args):
    backends = {int(k): tuple(v) for k, v in json.loads(args.backends).items()}
    ctl = None
    if args.role == "local":
        from agent.bpf.datapath import Control
        from agent.bpf.loader import Settings

        ctl = Control(Settings(pin_dir=args.pin_dir))

    async def serve(reader, writer, port):
        if ctl:
            ip, cport = writer.get_extra_info("peername")[:2]
            rec = ctl.accept_record(ip, cport)
            key = rec["service_id"] if rec else None
        else:
            key = port
        if key not in backends:
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection(*backends[key])
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    servers = []
    for port in args.port:
        servers.append(await asyncio.start_server(
            lambda r, w, p=port: serve(r, w, p), args.host, port, reuse_address=True))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=["local", "remote"], required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--backends", required=True, help="JSON {service id or port: [host, port]}")
    p.add_argument("--pin-dir", default=os.environ.get("NODEMESH_PIN_DIR", "/sys/fs/bpf/nodemesh"))
    p.add_argument("--cgroup")
    a = p.parse_args()
    if a.cgroup:
        with open(os.path.join(a.cgroup, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    try:
        asyncio.run(main(a))
    except KeyboardInterrupt:
        sys.exit(0)
