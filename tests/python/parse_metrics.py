"""Parses an OpenMetrics exposition from stdin with the Prometheus project's own parser and
prints its samples as JSON pairs: ["name{label=\"value\",...}", value], labels sorted."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        samples.append([f"{sample.name}{{{labels}}}", sample.value])
json.dump(samples, sys.stdout)
