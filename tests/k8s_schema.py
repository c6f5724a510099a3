"""Validates Kubernetes manifests offline against the API's own schema.

No API server or registry is reachable from CI, and kubectl validates
against a server's OpenAPI document. The official Python client
(Debian's python3-kubernetes) is generated from that document: each model
lists its fields with their JSON names and types (`attribute_map`,
`openapi_types`) and refuses a missing required field. So every object of
a built-in kind is walked against its model: an unknown field, a value of
the wrong type, or a missing required field is an error naming its path.
Objects of other kinds (the Prometheus operator's custom resources) have
no model here and are listed as not checked.

Usage: python3 k8s_schema.py MANIFEST.yaml
Prints one line per object; exits 1 with the errors if any.
"""

import datetime
import sys

import yaml
from kubernetes import client
from kubernetes.client import models

# (apiVersion, kind) of the built-in kinds a manifest here may hold.
KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("apps/v1", "Deployment"): "V1Deployment",
}


def check(value, type_name, path, errors):
    if value is None:
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check(item, type_name[5:-1], f"{path}[{i}]", errors)
    elif type_name.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check(item, inner, f"{path}.{key}", errors)
    elif type_name == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
    elif type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")
    elif type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {value!r}")
    elif type_name == "datetime":
        if not isinstance(value, (str, datetime.datetime)):
            errors.append(f"{path}: expected a time, got {value!r}")
    elif type_name == "object":
        # IntOrString, quantities and free-form fields.
        pass
    else:
        model = getattr(models, type_name)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a {type_name} object, got {value!r}")
            return
        by_json = {json: attr for attr, json in model.attribute_map.items()}
        for key, item in value.items():
            attr = by_json.get(key)
            if attr is None:
                errors.append(f"{path}.{key}: no such field in {type_name}")
                continue
            check(item, model.openapi_types[attr], f"{path}.{key}", errors)


def main(path):
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    api = client.ApiClient()
    errors = []
    for doc in documents:
        kind = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{kind[1]} {doc.get('metadata', {}).get('name')}"
        type_name = KINDS.get(kind)
        if type_name is None:
            print(f"{name}: not checked ({kind[0]} has no model here)")
            continue
        found = []
        check(doc, type_name, name, found)
        if not found:
            try:
                # The model's constructors refuse missing required fields.
                api._ApiClient__deserialize(doc, type_name)
            except (ValueError, TypeError) as e:
                found.append(f"{name}: {e}")
        errors.extend(found)
        print(f"{name}: {'valid' if not found else 'INVALID'} ({type_name})")
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
