#!/bin/sh
# Runs primes (the seeds' prime checker) on processes and on threads and
# checks what it prints: the header, the 20 numbers in descending order
# with the right primality flags, the total time.
# Usage: primes.sh PRIMES
set -eu
want='9999999999999999 -
9999999999999917 P
7777777777777777 -
7777777777777753 P
7777777536340681 -
6666667141414921 -
6666666666666719 P
6666666666666666 -
5555555555555555 -
5555555555555503 P
5555553133149889 -
4444444488888889 -
4444444444444444 -
4444444444444423 P
3333335652092209 -
3333333333333333 -
3333333333333301 P
299593572317531 P
142702110479723 P
2 P'
for mode in "" --threads; do
  out=$("$1" 2 $mode)
  echo "$out" | head -1 | grep -Eq '^Checking 20 numbers with 2 (processes|threads):$' ||
    { echo "bad header: $out" >&2; exit 1; }
  got=$(echo "$out" | sed -n '2,21p' |
        awk '{ if (NF == 3) print $1, $2; else print $1, "-" }')
  if [ "$got" != "$want" ]; then
    printf 'mode %s: got\n%s\n' "$mode" "$got" >&2
    exit 1
  fi
  echo "$out" | tail -1 | grep -Eq '^Total time: [0-9]+\.[0-9][0-9]s$' ||
    { echo "bad total: $out" >&2; exit 1; }
done
echo ok
