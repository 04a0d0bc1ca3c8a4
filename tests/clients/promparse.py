#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with the reference client library's strict
parser and prints its samples as JSON: [[name, {labels}, value], ...]. A malformed
exposition makes the parser raise, and this script exit non-zero."""
import json, math, sys

from prometheus_client.parser import text_string_to_metric_families

out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        v = s.value
        out.append([s.name, s.labels, "+Inf" if v == math.inf else v])
json.dump(out, sys.stdout)
