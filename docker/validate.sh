#!/usr/bin/env bash
# Static checks of the deployment kit; no Docker engine needed.
#
#   docker/validate.sh        (from the repository root; it also cds there itself)
#
# 1. docker/compose.yml is a valid compose file (Debian's docker-compose 1.29, installed with
#    apt-get when missing: the `docker` CLI alone has no `compose` without an engine's plugin).
# 2. Every YAML and JSON file under docker/ parses (all documents of multi-document YAML).
# 3. Every local source the Dockerfile COPYs exists in the build context (the repository root).
# 4. The Helm chart docker/helm/streamer: `helm lint --strict` with its values schema, then
#    `helm template` for the default values and each ci/*.yaml, every rendered core object checked
#    against Kubernetes' own schemas (kubernetes-validate --strict; the KEDA and Prometheus
#    Operator CRDs have no offline schema, tests/unit/test_deploy_kit.py checks those objects).
#    Both tools install themselves into $STREAMER_TOOLS (~/.cache/streamer) on first use: helm with
#    `go install` (the Go module proxy), kubernetes-validate with `pip install --target` (PyPI).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
python=.venv/bin/python
[[ -x $python ]] || { echo "validate: $python not found; create the venv first (make lint)" >&2; exit 1; }

if ! command -v docker-compose >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "validate: installing docker-compose (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null
fi

docker-compose -f docker/compose.yml config -q
echo "compose: docker/compose.yml ok ($(docker-compose version --short))"

"$python" - <<'PY'
import json
import re
import sys
from pathlib import Path

import yaml

failures = 0
for path in sorted(Path("docker").rglob("*")):
    if path.suffix not in {".yml", ".yaml", ".json"} or not path.is_file() or "templates" in path.parts:
        continue  # Helm templates are not YAML until rendered: step 4 renders and checks them
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
            what = "json"
        else:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            what = f"yaml, {len(docs)} document(s)"
        print(f"parse: {path} ok ({what})")
    except (ValueError, yaml.YAMLError) as exc:
        failures += 1
        print(f"parse: {path} FAILED: {exc}", file=sys.stderr)

# COPY/ADD sources without --from come from the build context (the repository root).
dockerfile = Path("docker/Dockerfile").read_text().replace("\\\n", " ")
for line in dockerfile.splitlines():
    words = line.split()
    if not words or words[0].upper() not in {"COPY", "ADD"} or any(w.startswith("--from") for w in words):
        continue
    sources = [w for w in words[1:-1] if not w.startswith("--")]
    for source in sources:
        if not any(Path().glob(source.rstrip("/"))):
            failures += 1
            print(f"dockerfile: COPY source {source} missing from the build context", file=sys.stderr)
if not failures:
    print("dockerfile: every COPY source exists in the build context")
sys.exit(1 if failures else 0)
PY
tools=${STREAMER_TOOLS:-$HOME/.cache/streamer}
helm_version=v3.22.0
kubernetes_validate_version=1.37.0
kube_version=1.37.0  # a go-installed helm defaults to Kubernetes 1.20; render for what we validate against
helm=$tools/bin/helm-$helm_version
if [[ ! -x $helm ]]; then
  echo "validate: installing helm $helm_version (go install; a few minutes on the first run)"
  mkdir -p "$tools/bin"
  GOPATH=$tools/go GOFLAGS=-modcacherw GOBIN=$tools/bin go install "helm.sh/helm/v3/cmd/helm@$helm_version"
  mv "$tools/bin/helm" "$helm"
fi
kv_dir=$tools/kubernetes-validate-$kubernetes_validate_version
if [[ ! -d $kv_dir/kubernetes_validate ]]; then
  echo "validate: installing kubernetes-validate $kubernetes_validate_version (pip --target)"
  "$python" -m pip install -q --disable-pip-version-check --target "$kv_dir" \
    "kubernetes-validate==$kubernetes_validate_version" >/dev/null 2>&1
fi
kubernetes_validate() { PYTHONPATH=$kv_dir "$python" -m kubernetes_validate -k "$kube_version" --strict --quiet "$@"; }
helm() { "$helm" "$@" --kube-version "$kube_version"; }

chart=docker/helm/streamer
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
variants=("")
for values in "$chart"/ci/*.yaml; do variants+=("$values"); done
for values in "${variants[@]}"; do
  args=()
  [[ -z $values ]] || args=(-f "$values")
  name=${values:+$(basename "$values" .yaml)}
  helm lint --strict --quiet "$chart" "${args[@]}" >/dev/null
  out=$rendered/${name:-default}.yaml
  helm template streamer "$chart" --namespace streamer "${args[@]}" >"$out"
  kubernetes_validate "$out"
  echo "helm: $chart ${name:-default values}: lint --strict ok, $(grep -c '^kind:' "$out") objects rendered, core kinds valid"
done
# What must fail: a password in values (it would land in a ConfigMap), and more replicas than partitions.
if helm template streamer "$chart" --set config.features.password=x >/dev/null 2>&1; then
  echo "helm: a password in values was rendered; the chart must refuse it" >&2; exit 1
fi
if helm template streamer "$chart" --set keda.maxReplicaCount=9 >/dev/null 2>&1; then
  echo "helm: maxReplicaCount above the partition count was rendered; the chart must refuse it" >&2; exit 1
fi
echo "helm: secrets in values and replicas beyond the partitions are refused (helm $helm_version)"
echo "validate: ok"
