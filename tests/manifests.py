"""deploy/'s manifests checked against KubeRay's own CRD schemas (shipped in tests/data/kuberay)
and the cluster launcher configs against Ray's own config validation.

Besides the schema, a field the schema does not declare is refused, as ``kubectl apply
--validate=strict`` would (a misspelt field would otherwise be dropped without a word).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "data" / "kuberay"


@lru_cache(maxsize=1)
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """openAPIV3Schema by (kind, apiVersion), for every version of every shipped CRD."""
    found = {}
    for path in sorted(CRDS.glob("ray.io_*.yaml.gz")):
        crd = yaml.safe_load(gzip.decompress(path.read_bytes()))
        kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            found[(kind, f"{group}/{version['name']}")] = version["schema"]["openAPIV3Schema"]
    return found


def undeclared(value: Any, schema: dict[str, Any], at: str = "") -> list[str]:
    """Paths of keys ``schema`` does not declare (where it does not allow any)."""
    out: list[str] = []
    if isinstance(value, dict):
        declared = schema.get("properties")
        extra = schema.get("additionalProperties")
        if declared is not None and not extra \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, item in value.items():
                if key in declared:
                    out += undeclared(item, declared[key], f"{at}/{key}")
                else:
                    out.append(f"{at}/{key}")
        elif isinstance(extra, dict):
            for key, item in value.items():
                out += undeclared(item, extra, f"{at}/{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += undeclared(item, schema["items"], f"{at}[{i}]")
    return out


def check(document: dict[str, Any]) -> list[str]:
    """Problems with one manifest (empty: it passes). Kinds KubeRay does not define pass."""
    kind, api = document.get("kind"), document.get("apiVersion")
    if (kind, api) in schemas():
        schema = schemas()[(kind, api)]
        problems = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}"
                    for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
        problems += [f"{path}: not a field of {kind}"
                     for path in undeclared(document, schema) if not path.startswith("/metadata")]
        return problems
    if "provider" in document and "cluster_name" in document:
        import ray.autoscaler._private.util as launcher

        try:
            launcher.validate_config(launcher.prepare_config(document))
        except Exception as exc:
            return [f"launcher config: {str(exc)[:300]}"]
    return []


def check_tree(root: Path) -> dict[str, list[str]]:
    """Every YAML document under ``root``: its problems, by "file kind name"."""
    report = {}
    for path in sorted(root.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                name = (doc.get("metadata") or {}).get("name") or doc.get("cluster_name")
                report[f"{path.relative_to(root.parent)} {doc.get('kind', 'launcher')} "
                       f"{name}"] = check(doc)
    return report


if __name__ == "__main__":  # make check-deploy
    import sys

    found = check_tree(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy"))
    for key, problems in found.items():
        print("FAIL" if problems else "PASS", key, *problems)
    raise SystemExit(any(found.values()))
