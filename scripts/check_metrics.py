#!/usr/bin/env python3
"""Fetch a Prometheus text endpoint and check that it parses.

Usage: check_metrics.py URL

Fetches URL (meant for forkhorn's --metrics-bind on loopback), parses the body
with prometheus_client's own text parser, and prints one JSON object mapping
each sample, written `name{label="value",...}` with labels sorted by name (or
just `name` when it has none), to its value.

Exit status: 0 when the body parses, 1 when it does not (the parser's error
on stderr), 2 for bad usage or a failed fetch.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def sample_key(name, labels):
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


def main(argv):
    if len(argv) != 2:
        print("usage: check_metrics.py URL", file=sys.stderr)
        return 2
    url = argv[1]
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8")
    except Exception as e:  # noqa: BLE001 - any fetch failure is reported the same way
        print(f"check_metrics: cannot fetch {url}: {e}", file=sys.stderr)
        return 2
    samples = {}
    try:
        # The parser is lazy: errors surface while iterating.
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample_key(sample.name, sample.labels)] = sample.value
    except Exception as e:  # noqa: BLE001 - the parser raises ValueError and others
        print(f"check_metrics: {url} is not valid Prometheus text: {e}", file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
