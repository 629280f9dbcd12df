"""`nodemesh explain`: one connection's whole path, and why each step went that way.

    nodemesh explain --pod shop/cart-0 198.18.0.10:6379 --meta key=user:42

The kernel half (explain_kernel) replays connect4 over the pinned maps for
this client: enrolled or not, services map, mode, local listener, spill
share, target. The proxy half (explain_proxy) takes the most likely proxy
target and walks that proxy's compiled configuration: listener, codec, the
route the metadata would match and why the earlier ones did not, the
cluster, and the endpoint its load balancer would pick.
"""

import textwrap

from agent.bpf.datapath import Control

from . import access, explain_kernel, explain_proxy, options, output, workload

EPILOG = """examples:
  nodemesh explain --pod shop/cart-0 198.18.0.10:6379 --meta key=user:42
  nodemesh explain --pid 4242 198.18.0.11:20880 \\
      --meta interface=org.apache.dubbo.demo.DemoService --meta method=sayHello
  nodemesh explain --cgroup /sys/fs/cgroup/kubepods.slice/pod1234 \\
      198.18.0.12:80 --meta :path=/api/v2 --meta :authority=web -o json

metadata keys are the codec's: Dubbo interface/method/version and attachments,
Thrift method, Redis key and command, HTTP :path/:method/:authority and headers.
The kernel draws the spill share per connection: targets carry a probability.
"""


def register(sub, common):
    e = sub.add_parser("explain", parents=[common],
                       help="why a connection from a pod goes where it goes",
                       formatter_class=options.formatter, epilog=EPILOG)
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--pod", metavar="NS/NAME", help="the client pod (see `nodemesh pods`)")
    who.add_argument("--pid", type=options.positive_int, metavar="N", help="the client process")
    who.add_argument("--cgroup", metavar="PATH", help="the client's cgroup v2 directory")
    e.add_argument("vip", metavar="VIP:PORT", type=options.hostport, help="the destination")
    e.add_argument("--meta", type=options.meta, action="append", default=[],
                   metavar="KEY=VALUE", help="request metadata for route matching (repeatable)")
    e.set_defaults(func=cmd_explain)


def _unmapped(vip: str) -> str:
    """An IPv4-mapped VIP ([::ffff:198.18.0.10]:80, what a dual-stack socket dials) is
    looked up as the IPv4 service, as connect6 does."""
    import ipaddress

    host, _, port = vip.rpartition(":")
    if host.startswith("["):
        mapped = ipaddress.ip_address(host.strip("[]")).ipv4_mapped
        if mapped is not None:
            return f"{mapped}:{port}"
    return vip


def cmd_explain(args) -> int:
    args.vip = _unmapped(args.vip)
    s = options.settings(args)
    client = workload.from_args(args, s.run_dir)
    dp = access.datapath(args)
    control = Control(dp.s)
    try:
        kernel = explain_kernel.explain(control, dp, client, args.vip)
    finally:
        control.close()
    metadata = dict(args.meta)
    verdict = max(kernel["targets"], key=lambda t: t["probability"])
    unavailable, proxy = {}, None
    via = [t for t in kernel["targets"] if t["target"] in ("local", "remote")]
    if via:
        first = max(via, key=lambda t: t["probability"])
        proxy = explain_proxy.explain(s.run_dir, first["target"], args.vip, kernel["service"],
                                      metadata, unavailable)
    data = {"client": client.as_dict(), "destination": args.vip, "metadata": metadata,
            "datapath": kernel, "verdict": verdict, "proxy": proxy,
            "unavailable": unavailable}
    output.emit(data, args.output, lambda wide: render(data, wide))
    return 0


# -- text ----------------------------------------------------------------------------------

def render(d: dict, wide: bool) -> str:
    width = 10 ** 6 if wide else output.WIDTH
    parts = [_client_text(d, width), _kernel_text(d["datapath"], width)]
    if d["proxy"] is not None:
        parts.append(_proxy_text(d["proxy"], width))
    elif d["verdict"]["target"] == "original":
        parts.append("no proxy: the connection keeps its original destination "
                     "(kube-proxy routes it at L4)")
    if d["unavailable"]:
        parts.append(output.unavailable_text(d["unavailable"], width))
    return "\n\n".join(parts)


def _wrap(text: str, width: int, indent: str = "    ", subsequent=None) -> list:
    return textwrap.wrap(text, width, initial_indent=indent,
                         subsequent_indent=indent if subsequent is None else subsequent,
                         break_on_hyphens=False) or [indent.rstrip()]


def _client_text(d: dict, width: int) -> str:
    c = d["client"]
    who = f"pod {c['pod']}" if c["pod"] else "cgroup"
    lines = [output.clip(f"client: {who} {c['cgroup']} (id {c['cgroup_id']})", width)]
    if c["pid"]:
        lines.append(f"  process {c['pid']}" + ("" if c["netns"] else ", network namespace ?"))
    meta = " ".join(f"{k}={v}" for k, v in d["metadata"].items())
    lines.append(output.clip(f"destination: {d['destination']}" +
                             (f"  metadata: {meta}" if meta else ""), width))
    return "\n".join(lines)


def _kernel_text(k: dict, width: int) -> str:
    gen = f" (proxy settings generation {k['generation']})" if k["generation"] else ""
    lines = [f"kernel{gen}"]
    for st in k["steps"]:
        text = f"{st['result']}: {st['detail']}" if st["detail"] else st["result"]
        lines += textwrap.wrap(text, width, initial_indent=f"  {st['name'] + ':':<16}",
                               subsequent_indent=" " * 18, break_on_hyphens=False)
    targets = "; ".join(
        f"{t['target']} {t['address']} ({t['probability'] * 100:g}%"
        + (f", {t['reason']})" if t["reason"] else ")") for t in k["targets"])
    lines += _wrap(f"=> {targets}", width, "  ", "     ")
    return "\n".join(lines)


def _proxy_text(p: dict, width: int) -> str:
    lines = [f"proxy ({p['component']}, configuration from the {p['config_from']})"]
    if p["listener"] is None:
        return "\n".join(lines + _wrap(f"=> {p['summary']}", width, "  "))
    lst, r = p["listener"], p["route"]
    lines.append(output.clip(f"  listener {lst['name']} (version {lst['version']})", width))
    if lst["nack"]:
        lines += _wrap(f"last update refused: {lst['nack']}", width)
    if r["chain"]:
        lines.append(output.clip(f"    chain {r['chain']}: codec {r['codec'] or 'tcp (L4)'}",
                                 width))
    if r["table"]:
        version = r["table_version"] or "not received"
        lines.append(output.clip(f"    routes {r['table']} (version {version})", width))
    for miss in r["misses"]:
        lines += _wrap(f"#{miss['index']} {miss['route']}  no match ({miss['reason']})", width,
                       subsequent="      ")
    lines += _wrap(f"=> {r['summary']}", width, "  ")
    for c in p["clusters"]:
        lines += _cluster_text(c, width)
    return "\n".join(lines)


def _cluster_text(c: dict, width: int) -> list:
    if c["version"] is None:
        return _wrap(f"cluster {c['name']} ({c['percent']:g}%): not in the configuration",
                     width)
    eds = f", endpoints {c['endpoints_version']}" if c["endpoints_version"] else ""
    lines = [output.clip(f"  cluster {c['name']} ({c['percent']:g}%): version "
                         f"{c['version']}{eds}", width)]
    lb = c["lb"]
    if lb is None:
        return lines
    if lb["pick"]:
        lines += _wrap(f"=> {lb['pick']} ({lb['how']})", width)
    else:
        cands = ", ".join(lb["candidates"]) or "none"
        lines += _wrap(f"=> one of {cands}: {lb['how']}", width)
    return lines
