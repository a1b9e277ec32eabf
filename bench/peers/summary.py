"""summary.py RESULTS.json: the sidecar issue's goals, read from one run of the peer harness.

Every figure is a ratio between numbers of the same run: ours over the best peer's (or over
`direct`), so machine noise cancels as far as it can.
"""
import json
import sys

OURS = "palisade"


def main(path):
    res = json.load(open(path))
    peers = {l: p for l, p in res["peers"].items() if p["peer"] not in ("direct", OURS)}
    ours = next((p for p in res["peers"].values() if p["peer"] == OURS), None)
    if ours is None:
        sys.exit("no palisade results in " + path)
    base = res["baseline"]

    def rps(p, mode, c):
        d = p["http"].get(mode, {}).get(c)
        return d["rps"] if d else None

    def p99(p, mode, c):
        d = p["http"].get(mode, {}).get(c)
        return d["lat_us"]["p99"] if d else None

    def gbit(p):
        return p["iperf"]["gbit_per_s"] if p.get("iperf") and p["iperf"].get("ok") else None

    def best(metric, higher=True):
        vals = [(metric(p), l) for l, p in peers.items() if metric(p) is not None]
        if not vals:
            return None, None
        return (max if higher else min)(vals)

    conns = sorted({c for p in res["peers"].values() for m in p["http"].values() for c in m}, key=int)
    top = conns[-1]
    out = {"run": res["meta"].get("date_utc"), "connections_for_load_points": int(top)}

    b_gbit, b_gbit_peer = best(gbit)
    out["bulk_gbit_per_s"] = {"palisade": gbit(ours), "best_peer": b_gbit, "best_peer_name": b_gbit_peer,
                              "direct": base.get("iperf_gbit_per_s"),
                              "ratio_to_best_peer": gbit(ours) / b_gbit if b_gbit and gbit(ours) else None,
                              "ratio_to_direct": gbit(ours) / base["iperf_gbit_per_s"]
                              if gbit(ours) and base.get("iperf_gbit_per_s") else None,
                              "goal": "ratio_to_best_peer >= 1.2 and ratio_to_direct >= 0.5"}
    for mode, name, goal in (("keepalive", "keepalive_req_per_s", "ratio_to_best_peer >= 1.0"),
                             ("close", "handshake_per_request_req_per_s", "ratio_to_best_peer >= 1.5")):
        rows = {}
        for c in conns:
            b, bp = best(lambda p: rps(p, mode, c))
            o = rps(ours, mode, c)
            bl, blp = best(lambda p: p99(p, mode, c), higher=False)
            rows[f"c{c}"] = {"palisade": o, "best_peer": b, "best_peer_name": bp,
                             "ratio_to_best_peer": o / b if o and b else None,
                             "p99_us_palisade": p99(ours, mode, c), "p99_us_best_peer": bl,
                             "p99_ratio_to_best_peer": p99(ours, mode, c) / bl if bl and p99(ours, mode, c) else None}
        rows["goal"] = goal
        out[name] = rows
    rss = ours.get("rss_kib", {})
    out["rss_mib"] = {
        "idle_client": rss.get("idle", {}).get("client", 0) / 1024,
        "idle_server": rss.get("idle", {}).get("server", 0) / 1024,
        f"client_at_c{top}_keepalive": rss.get(f"load_keepalive_c{top}", {}).get("client", 0) / 1024,
        f"server_at_c{top}_keepalive": rss.get(f"load_keepalive_c{top}", {}).get("server", 0) / 1024,
        "goal": "idle <= 8 MiB",
    }
    out["problems"] = res.get("problems", [])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
