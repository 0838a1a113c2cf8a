# Sourced by run.sh and test.sh: make .venv with the given requirements file, once per change of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements="$1"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(basename "$requirements")"
wanted="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" > "$stamp"
fi
# shellcheck disable=SC1091
. .venv/bin/activate
