#!/bin/sh
# Runs the README's HTTP example against flags_server on a free port.
# Usage: readme_http.sh FLAGS_SERVER README_HTTP
set -eu
out=$(mktemp)
"$1" --port 0 --quiet >"$out" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null; rm -f "$out"' EXIT
i=0
port=""
while [ -z "$port" ] && [ $i -lt 300 ]; do
  port=$(sed -n 's|^flags_server: listening on http://127.0.0.1:\([0-9]*\)/$|\1|p' "$out")
  [ -n "$port" ] || sleep 0.1
  i=$((i + 1))
done
base="http://localhost:$port/flags"
size=$(wc -c < /usr/share/flags/countries/16x11/cn.gif)
got=$("$2" "$base/cn/cn.gif" "$base/zz/zz.gif" | sort)
want=$(printf '%s\n' "$base/zz/zz.gif: HTTP error 404 - Not Found (CF_EHTTPSTATUS)" \
                     "Read $size bytes from $base/cn/cn.gif" | sort)
if [ "$got" != "$want" ]; then
  printf 'got:\n%s\nwant:\n%s\n' "$got" "$want" >&2
  exit 1
fi
echo ok
