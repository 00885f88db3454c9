#!/usr/bin/env bash
# Static checks of the deployment kit; no Docker engine needed.
#
#   docker/validate.sh        (from the repository root; it also cds there itself)
#
# 1. docker/compose.yml is a valid compose file (Debian's docker-compose 1.29, installed with
#    apt-get when missing: the `docker` CLI alone has no `compose` without an engine's plugin).
# 2. Every YAML and JSON file under docker/ parses (all documents of multi-document YAML).
# 3. Every local source the Dockerfile COPYs exists in the build context (the repository root).
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
    if path.suffix not in {".yml", ".yaml", ".json"} or not path.is_file():
        continue
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
echo "validate: ok"
