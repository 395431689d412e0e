#!/usr/bin/env python3
"""Renders a Helm chart offline with helm-python-sdk (Helm v4's engine, no helm binary) and
prints every object as one YAML stream: the CRDs from crds/ first, then the templates in path
order. Lint problems are printed to stderr and make the exit code 1.

Usage: scripts/render-chart.py CHART_DIR [--values-json JSON] [--name NAME] [--namespace NS]
"""
import argparse
import json
import sys

try:
    from helm_python import Chart, lint
    from helm_python.errors import HelmError
except ImportError:
    sys.exit("render-chart: helm-python-sdk is not installed; run scripts/setup.sh")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart")
    parser.add_argument("--values-json", default="{}", help="values overriding values.yaml")
    parser.add_argument("--name", default="faultline", help="the release name")
    parser.add_argument("--namespace", default="faultline-system", help="the release namespace")
    args = parser.parse_args()
    values = json.loads(args.values_json)

    try:
        return render(args, values)
    except HelmError as error:
        print(f"render-chart: {args.chart}: {error}", file=sys.stderr)
        return 1


def render(args, values) -> int:
    result = lint(args.chart, values=values or None, namespace=args.namespace)
    problems = [m for m in result.get("messages", []) if m.get("severity", 0) >= 2]
    chart = Chart.load(args.chart)
    rendered = chart.render(values or None, name=args.name, namespace=args.namespace,
                            is_install=True)
    documents = [crd["data"] for crd in sorted(chart.crds, key=lambda c: c["name"])]
    documents += [rendered[path] for path in sorted(rendered) if path.endswith(".yaml")]
    sys.stdout.write("\n---\n".join(doc.strip("\n") for doc in documents if doc.strip()) + "\n")
    for problem in problems:
        print(f"render-chart: lint: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
