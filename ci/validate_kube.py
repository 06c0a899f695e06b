"""Validates Weft's Kubernetes YAML with independent schemas, strictly (a
field the schema does not know is an error). Run by ci/validate-kube inside
a venv holding kubernetes-validate and jsonschema:

  * Kubernetes API objects (the rendered `weft install` / `weft uninstall`,
    the injection samples, manifests in kind-configs/) against the
    Kubernetes OpenAPI schemas kubernetes-validate ships, for every
    --kubernetes-version; an object whose kind has no schema there fails
    (unless it is one of Weft's own custom resources, see below).
  * kind's Cluster configs (kind.x-k8s.io/v1alpha4) against
    ci/schemas/kind-cluster-v1alpha4.json.
  * Weft's custom resources against the openAPIV3Schema of the CRD
    `weft install` renders, made strict the way the API server is with
    kubectl's default --validate=strict: valid samples must pass, and every
    document of the invalid samples must fail.

Each check first proves it can fail (a known-bad object is rejected), so a
validator that silently stopped validating breaks the build instead of
passing it.
"""

import argparse
import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate.utils as kv
import yaml

KIND_API = "kind.x-k8s.io/v1alpha4"


def documents(path):
    """(index, doc) for every non-empty document of a YAML file."""
    with open(path) as f:
        try:
            docs = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            raise SystemExit(f"{path}: not YAML: {e}")
    out = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SystemExit(f"{path}: document {i + 1} is a {type(doc).__name__}, not an object")
        out.append((i + 1, doc))
    return out


def name_of(doc):
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def validate_api_object(doc, versions):
    """Problems of one Kubernetes API object, for each version."""
    problems = []
    for version in versions:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            problems.append(f"Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}")
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"Kubernetes {version}: {path}: {e.message}")
    return problems


def strict_schema(schema):
    """A structural CRD schema as JSON Schema, with the API server's
    extensions spelled out: nullable, int-or-string, and unknown fields
    rejected wherever the schema does not preserve them."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return s
        for key in ("properties", "patternProperties"):
            for k, v in (s.get(key) or {}).items():
                s[key][k] = walk(v)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(s.get(key), dict):
                s[key] = walk(s[key])
        for key in ("allOf", "anyOf", "oneOf"):
            if key in s:
                s[key] = [walk(x) for x in s[key]]
        if s.pop("x-kubernetes-int-or-string", False):
            s.pop("type", None)
            s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
        preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
        if s.get("type") in ("object", ["object", "null"]) and not preserve and "additionalProperties" not in s:
            s["additionalProperties"] = False
        return s

    return walk(schema)


def crd_validators(install_docs):
    """{(apiVersion, kind): validator} for every served version of every CRD."""
    out = {}
    for _, crd in install_docs:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            openapi = version["schema"]["openAPIV3Schema"]
            api_version = f"{spec['group']}/{version['name']}"
            kind = spec["names"]["kind"]
            schema = strict_schema(openapi)
            # What every object has beside its spec; metadata is the API
            # server's ObjectMeta (checked there, not here).
            schema.setdefault("properties", {}).update(
                {
                    "apiVersion": {"const": api_version},
                    "kind": {"const": kind},
                    "metadata": {"type": "object"},
                }
            )
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            jsonschema.Draft7Validator.check_schema(schema)
            out[(api_version, kind)] = jsonschema.Draft7Validator(schema)
    return out


def errors_of(validator, doc):
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def must_fail_first(label, problems):
    """A self-check: the known-bad object must have been rejected."""
    if not problems:
        raise SystemExit(f"validate-kube: self-check failed: {label} accepted a known-bad object; the validator does not validate")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("--install", required=True, type=pathlib.Path, help="rendered weft install")
    parser.add_argument("--manifests", nargs="*", default=[], type=pathlib.Path,
                        help="more YAML files: Kubernetes objects, kind Cluster configs or Weft custom resources")
    parser.add_argument("--kind-schema", required=True, type=pathlib.Path)
    parser.add_argument("--valid-crs", nargs="*", default=[], type=pathlib.Path)
    parser.add_argument("--invalid-crs", nargs="*", default=[], type=pathlib.Path)
    args = parser.parse_args()

    versions = args.kubernetes_version
    known = kv.all_versions()
    for v in versions:
        if kv.major_minor(v) not in [kv.major_minor(k) for k in known]:
            raise SystemExit(f"validate-kube: kubernetes-validate has no schemas for {v} (it has {', '.join(known)})")

    kind_validator = jsonschema.Draft202012Validator(json.loads(args.kind_schema.read_text()))
    install_docs = documents(args.install)
    crds = crd_validators(install_docs)
    if not crds:
        raise SystemExit(f"validate-kube: {args.install} renders no CustomResourceDefinition")

    # Self-checks: each validator rejects an unknown field.
    bad_service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                   "spec": {"ports": [{"port": 80, "portt": 1}]}}
    must_fail_first("kubernetes-validate --strict", validate_api_object(bad_service, versions))
    must_fail_first("the kind Cluster schema", errors_of(kind_validator, {"kind": "Cluster", "apiVersion": KIND_API, "nodes": [{"rolee": "worker"}]}))

    failures = []

    def api_or_kind_or_cr(path, n, doc):
        where = f"{path}:{n} {name_of(doc)}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key == ("v1", "List"):
            # kubectl's client-side List (not an API kind): its items are the objects.
            extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "items"})
            items = doc.get("items")
            if extra or not isinstance(items, list):
                failures.append(f"{where}: a v1 List has apiVersion, kind, metadata and an items array (got {sorted(doc)})")
                return False
            return all([api_or_kind_or_cr(path, f"{n} items[{i}]", item) for i, item in enumerate(items)])
        if doc.get("apiVersion") == KIND_API:
            problems = errors_of(kind_validator, doc)
        elif key in crds:
            problems = errors_of(crds[key], doc)
        else:
            problems = validate_api_object(doc, versions)
        for p in problems:
            failures.append(f"{where}: {p}")
        return not problems

    files = [args.install] + args.manifests
    for path in files:
        docs = documents(path)
        ok = sum(api_or_kind_or_cr(path, n, doc) for n, doc in docs)
        print(f"  {'ok  ' if ok == len(docs) else 'FAIL'} {path}: {ok} of {len(docs)} objects valid")

    valid = 0
    for path in args.valid_crs:
        for n, doc in documents(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in crds:
                failures.append(f"{path}:{n}: {key[0]} {key[1]} is not one of Weft's CRDs ({sorted(crds)})")
                continue
            problems = errors_of(crds[key], doc)
            failures.extend(f"{path}:{n} {name_of(doc)}: {p}" for p in problems)
            valid += not problems
    rejected = 0
    for path in args.invalid_crs:
        for n, doc in documents(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            problems = errors_of(crds[key], doc) if key in crds else [f"not one of Weft's CRDs"]
            if problems:
                rejected += 1
                print(f"  ok   {path}:{n} {name_of(doc)} rejected: {problems[0]}")
            else:
                failures.append(f"{path}:{n} {name_of(doc)}: a wrong custom resource was accepted by the CRD's schema")
    print(f"  CRDs {', '.join(k for _, k in sorted(crds))}: {valid} valid samples accepted, {rejected} wrong ones rejected")
    if args.invalid_crs and not rejected:
        failures.append("no wrong custom resource was tried")

    if failures:
        print("\nvalidate-kube: FAILED", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"validate-kube: all valid against Kubernetes {', '.join(versions)} (strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
