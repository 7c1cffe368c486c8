# Sourced by tests/interop/run.sh and scripts/sandbox, from tests/interop/.
# Installs the pinned npm and pip dependencies once per lock-file content, in a cache
# outside the clone (so CI's fresh clones reuse them), and links them in as
# node_modules and .venv. Keyed by a hash of the lock files: a changed pin installs anew.
#   interop_node_deps LOGFILE   -> node_modules
#   interop_py_deps LOGFILE [REQUIREMENTS LINK]  -> .venv (or LINK)
X402D_CI_CACHE=${X402D_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/x402d-ci}

_interop_link() { # TARGET NAME: make NAME a symlink to TARGET (replacing an old dir or link)
  if [ "$(readlink "$2" 2>/dev/null)" != "$1" ]; then
    rm -rf "$2"
    ln -s "$1" "$2"
  fi
}

interop_node_deps() {
  local key dir
  key=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
  dir="$X402D_CI_CACHE/interop-node-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir" && mkdir -p "$dir" && cp package.json package-lock.json "$dir/" &&
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$1" 2>&1 &&
      touch "$dir/.complete" || return 1
  fi
  _interop_link "$dir/node_modules" node_modules
}

interop_py_deps() { # LOGFILE [REQUIREMENTS LINK]
  local req=${2:-requirements.txt} link=${3:-.venv} key dir
  key=$( { cat "$req"; python3 --version; } | sha256sum | cut -c1-16)
  dir="$X402D_CI_CACHE/interop-venv-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir" &&
      { python3 -m venv "$dir" && "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"; } >"$1" 2>&1 &&
      touch "$dir/.complete" || return 1
  fi
  _interop_link "$dir" "$link"
}
