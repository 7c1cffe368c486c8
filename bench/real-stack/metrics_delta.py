"""Per-paid-call figures from two scrapes of x402d's GET /metrics.

usage: metrics_delta.py BEFORE AFTER CALLS
prints: "<durable commits per call> <own-time p50 µs> <own-time p99 µs>"
(own time = x402d_paid_call_overhead_seconds, interpolated inside its bucket as
PromQL's histogram_quantile does; "nan" on a binary without the histogram).
"""
import math
import sys

OWN = "x402d_paid_call_overhead_seconds"
COMMITS = 'x402d_ledger_commits_total{durable="true"}'


def read(path):
    samples, buckets = {}, {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            v = float(value)
        except ValueError:
            continue
        if name.startswith(OWN + '_bucket{le="'):
            le = name[len(OWN) + len('_bucket{le="'):].split('"')[0]
            buckets[math.inf if le == "+Inf" else float(le)] = v
        else:
            samples[name] = v
    return samples, buckets


def quantile(delta, q):
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return math.nan
    rank, lo = q * total, (0.0, 0.0)
    for le, n in delta:
        if n >= rank:
            if math.isinf(le):
                return lo[0]
            width = n - lo[1]
            return lo[0] + (le - lo[0]) * ((rank - lo[1]) / width if width > 0 else 1)
        lo = (le, n)
    return math.nan


def main():
    (s0, b0), (s1, b1), calls = read(sys.argv[1]), read(sys.argv[2]), max(1, int(sys.argv[3]))
    commits = (s1.get(COMMITS, 0) - s0.get(COMMITS, 0)) / calls
    delta = [(le, b1[le] - b0.get(le, 0)) for le in sorted(b1)]
    p50, p99 = (quantile(delta, q) * 1e6 for q in (0.5, 0.99))
    print(f"{commits:.2f} {p50:.0f} {p99:.0f}")


if __name__ == "__main__":
    main()
