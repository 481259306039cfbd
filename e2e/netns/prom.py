#!/usr/bin/env python3
"""Helpers of metrics.sh: parse a /metrics scrape with the Prometheus project's own text parser
(Debian's python3-prometheus-client) and read values from it.

  prom.py check FILE           parse every line; fail unless each sample line became a sample
                               and every family has HELP and TYPE; print the family names
  prom.py value FILE NAME [LABEL=VALUE ...]
                               print the value of the one sample NAME with exactly those labels
                               (exit 3 when there is none)
  prom.py docs DOCS PREFIX     print the metric names docs/metrics.md lists with PREFIX; a line
                               of its table that says "Kubernetes mode only" is marked with a
                               trailing " k8s"
  prom.py dashboard FILE       print the families the Grafana dashboard's queries use (a
                               histogram's _bucket, _sum and _count series name the histogram)
"""
import re
import sys

from prometheus_client.parser import text_string_to_metric_families


def families(text):
    return list(text_string_to_metric_families(text))


def check(path):
    text = open(path).read()
    if not text.endswith("\n"):
        sys.exit("%s: does not end with a newline" % path)
    fams = families(text)  # Raises ValueError on any line the parser does not accept.
    sample_lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    samples = sum(len(f.samples) for f in fams)
    if samples != len(sample_lines):
        sys.exit("%s: %d sample lines but the parser made %d samples" % (path, len(sample_lines), samples))
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in types.items():
        if name not in helps:
            sys.exit("%s: %s has a TYPE line but no HELP line" % (path, name))
        if kind == "counter" and not name.endswith("_total"):
            sys.exit("%s: counter %s does not end in _total" % (path, name))
        if not name.startswith("tunnelmesh_"):
            sys.exit("%s: %s lacks the tunnelmesh_ prefix" % (path, name))
    for f in fams:
        if f.type not in ("counter", "gauge", "histogram"):
            sys.exit("%s: %s has no TYPE line (type %s)" % (path, f.name, f.type))
        for s in f.samples:
            if s.value != s.value:  # NaN
                sys.exit("%s: %s is NaN" % (path, s.name))
    for name in sorted(types):
        print(name)


def value(path, name, labels):
    want = dict(l.split("=", 1) for l in labels)
    for f in families(open(path).read()):
        for s in f.samples:
            if s.name == name and s.labels == want:
                v = s.value
                print(int(v) if v == int(v) else v)
                return
    sys.exit(3)


def docs(path, prefix):
    for line in open(path):
        m = re.match(r"\| `(%s[a-z_]+)` \|" % re.escape(prefix), line)
        if m:
            print(m.group(1) + (" k8s" if "Kubernetes mode only" in line else ""))


def dashboard(path):
    names = set()
    for name in re.findall(r"tunnelmesh_(?:agent|operator)_[a-z_]+", open(path).read()):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    for name in sorted(names):
        print(name)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        check(sys.argv[2])
    elif cmd == "value":
        value(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "docs":
        docs(sys.argv[2], sys.argv[3])
    elif cmd == "dashboard":
        dashboard(sys.argv[2])
    else:
        sys.exit("unknown command " + cmd)
