"""Printing bench/datapath.py's results: one table per benchmark, ratios next
to the figures they come from."""

from bench.common import print_table


def report(res: dict) -> None:
    if res["request_response"]:
        report_rr(res["request_response"])
    if res["connect"]:
        report_connect(res["connect"])
    if res.get("connect_request"):
        report_request(res["connect_request"])
    print(f"\nrun took {res['seconds']} s; load average {res['loadavg_before'][0]} -> "
          f"{res['loadavg_after'][0]}; leftovers: {res['leftovers'] or 'none'}")


def report_rr(rr: dict) -> None:
    rows = []
    for key, fig in rr.items():
        red, tcp, unix = fig["redirect"], fig["tcp"], fig["unix"]
        rows.append([key,
                     f"{red['requests_per_s']:.0f}" + ("" if red["valid"] else " INVALID"),
                     f"{tcp['requests_per_s']:.0f}", f"{unix['requests_per_s']:.0f}",
                     f"{fig['ratio_rps_redirect_vs_tcp']:.2f}x ({fig['paired_ratio_rps_redirect_vs_tcp']:.2f}x)",
                     f"{fig['ratio_rps_redirect_vs_unix']:.2f}x ({fig['paired_ratio_rps_redirect_vs_unix']:.2f}x)",
                     f"{red['p50_us']:.1f}/{red['p99_us']:.1f}",
                     f"{tcp['p50_us']:.1f}/{tcp['p99_us']:.1f}",
                     f"{unix['p50_us']:.1f}/{unix['p99_us']:.1f}",
                     f"{fig['ratio_p50_redirect_vs_unix']:.2f}x",
                     f"{red['cpu_us_per_req']:.1f}/{tcp['cpu_us_per_req']:.1f}/{unix['cpu_us_per_req']:.1f}",
                     f"{fig['cpu_ratio_redirect_vs_tcp']:.2f}x",
                     f"{fig['best_ratio_rps_redirect_vs_tcp']:.2f}x"])
    print_table("request/response (size/connections): requests/s, p50/p99 us, medians"
                " (ratio of medians; median of per-round ratios)",
                ["case", "redirect", "tcp", "unix", "red/tcp", "red/unix",
                 "red p50/p99", "tcp p50/p99", "unix p50/p99", "p50 red/unix",
                 "cpu us/req red/tcp/unix", "req/cpu-s red/tcp", "best red/tcp"], rows)


def report_connect(c: dict) -> None:
    rows = []
    for v in [k for k, f in c.items() if isinstance(f, dict)]:    # variants, in run order
        f = c[v]
        base = "none6" if v == "bpf6" else "none"           # same family, no program
        rows.append([v, f"{f['connects_per_s']:.0f}" + ("" if f.get("valid", True) else " INVALID"),
                     f"{f['connects_per_s'] / c[base]['connects_per_s']:.2f}x",
                     f"{f.get('paired_ratio_vs_none', 1):.2f}x",
                     f"{f['p50_us']:.1f}", f"{f.get('p50_ratio_vs_none', 1):.2f}x",
                     f"{f['p99_us']:.1f}", f"{f['cpu_us_per_connect']:.1f}",
                     f"{f.get('cpu_ratio_vs_none', 1):.2f}x",
                     f"{f.get('best_ratio_vs_none', 1):.2f}x"])
    print_table("connect + close: connects/s, medians (bpf6 against none6)",
                ["variant", "connects/s", "vs none", "paired vs none", "p50 us",
                 "none p50/p50", "p99 us", "cpu us/conn", "conn/cpu-s vs none",
                 "best vs none"], rows)
    b = c["bpf"]
    print(f"\nconnect cost target (bpf >= 0.95x none): {c['ratio_bpf_vs_none']:.3f}x medians, "
          f"{b['paired_ratio_vs_none']:.3f}x paired, {b['p50_ratio_vs_none']:.3f}x p50, "
          f"{b['cpu_ratio_vs_none']:.3f}x CPU")
    if "bpf6" in c:
        b6 = c["bpf6"]
        print(f"connect6 (bpf6 vs none6): {b6['p50_ratio_vs_none']:.3f}x p50, "
              f"{b6['cpu_ratio_vs_none']:.3f}x CPU")
    print(f"bpf vs iptables: {c['ratio_bpf_vs_iptables']:.2f}x")


def report_request(c: dict) -> None:
    rows = []
    for v in [k for k, f in c.items() if isinstance(f, dict)]:
        f = c[v]
        rows.append([v, f"{f['connects_per_s']:.0f}" + ("" if f.get("valid", True) else " INVALID"),
                     f"{f.get('paired_ratio_vs_none', 1):.2f}x",
                     f"{f['p50_us']:.1f}", f"{f.get('p50_ratio_vs_none', 1):.2f}x",
                     f"{f['p99_us']:.1f}", f"{f['cpu_us_per_connect']:.1f}",
                     f"{f.get('cpu_ratio_vs_none', 1):.2f}x"])
    print_table(f"connect + one {c['request_bytes']} B request + close: medians",
                ["variant", "connects/s", "paired vs none", "p50 us", "none p50/p50",
                 "p99 us", "cpu us/conn", "conn/cpu-s vs none"], rows)
    p = c["bpf_paired"]
    print(f"\nthe default (pairing) with a request, vs none: {p['paired_ratio_vs_none']:.3f}x "
          f"paired, {p['p50_ratio_vs_none']:.3f}x p50, {p['cpu_ratio_vs_none']:.3f}x CPU; "
          f"vs iptables {c['ratio_bpf_paired_vs_iptables']:.2f}x")
