#!/bin/sh
# Installs the build tree into a temporary prefix, then builds and runs a
# consumer three ways: pkg-config (shared), pkg-config --static, and CMake
# find_package(cfutures). Also checks that the shared library exports only
# cf_* symbols. Usage: install_consumer.sh BUILD_DIR
set -eu
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null

cat > "$tmp/consumer.c" <<'C'
#include <cf/cfutures.h>
#include <stdio.h>
static int twice(void *arg, cf_value *r) { r->u.i = 2 * (intptr_t)arg; return 0; }
int main(void) {
  cf_executor *ex;
  cf_future *f;
  const cf_value *v;
  if (cf_thread_pool_new(NULL, &ex) != 0) return 1;
  if (cf_executor_submit(ex, twice, (void *)21, &f) != 0) return 1;
  if (cf_future_result(f, CF_FOREVER, &v) != 0 || v->u.i != 42) return 1;
  cf_future_unref(f);
  printf("consumer ok (%s)\n", CF_VERSION_STRING);
  return cf_executor_free(ex);
}
C

pc=$(dirname "$(find "$tmp/prefix" -name cfutures.pc | head -n 1)")
libdir=$(dirname "$pc")
export PKG_CONFIG_PATH="$pc"
cc "$tmp/consumer.c" $(pkg-config --cflags --libs cfutures) -o "$tmp/shared"
LD_LIBRARY_PATH="$libdir" "$tmp/shared"
cc "$tmp/consumer.c" -static-libgcc $(pkg-config --cflags cfutures) \
  "$libdir/libcfutures.a" $(pkg-config --libs --static cfutures | sed 's/-lcfutures//') \
  -o "$tmp/static"
"$tmp/static"

# The HTTP client's archive, through its own .pc (when it was built).
if [ -f "$pc/cfutures-http.pc" ]; then
  cat > "$tmp/http.c" <<'C'
#include <cf/cfutures.h>
#include <cf/http.h>
#include <stdio.h>
int main(void) {
  cf_http_client *c;
  if (cf_http_client_new(0, &c) != 0) return 1;
  cf_http_response r = {0};
  cf_http_opts o = {.timeout_ns = CF_SEC(5)};
  int rc = cf_http_get(c, "http://127.0.0.1:1/", &o, &r); /* refused */
  cf_http_response_release(&r);
  printf("http consumer ok (%s)\n", cf_err_name(rc));
  return cf_http_client_free(c) != 0 || rc == 0;
}
C
  cc "$tmp/http.c" $(pkg-config --cflags --libs cfutures-http) -o "$tmp/http"
  LD_LIBRARY_PATH="$libdir" "$tmp/http"
fi

# Loaded with dlopen: the library's thread-locals are initial-exec
# (CMakeLists.txt), which a dlopen'ed library may use while they fit the
# static TLS that glibc keeps spare.
cat > "$tmp/dl.c" <<'C'
#include <cf/cfutures.h>
#include <dlfcn.h>
#include <stdio.h>
static int twice(void *arg, cf_value *r) { r->u.i = 2 * (intptr_t)arg; return 0; }
int main(int argc, char **argv) {
  void *h = dlopen(argc > 1 ? argv[1] : "", RTLD_NOW);
  if (h == NULL) { fprintf(stderr, "%s\n", dlerror()); return 1; }
  int (*pool_new)(const cf_thread_pool_opts *, cf_executor **);
  int (*submit)(cf_executor *, cf_task_fn, void *, cf_future **);
  int (*result)(cf_future *, int64_t, const cf_value **);
  void (*unref)(cf_future *);
  int (*ex_free)(cf_executor *);
  *(void **)&pool_new = dlsym(h, "cf_thread_pool_new");
  *(void **)&submit = dlsym(h, "cf_executor_submit");
  *(void **)&result = dlsym(h, "cf_future_result");
  *(void **)&unref = dlsym(h, "cf_future_unref");
  *(void **)&ex_free = dlsym(h, "cf_executor_free");
  if (!pool_new || !submit || !result || !unref || !ex_free) {
    fprintf(stderr, "dlsym: %s\n", dlerror());
    return 1;
  }
  cf_executor *ex;
  cf_future *f;
  const cf_value *v;
  if (pool_new(NULL, &ex) != 0 || submit(ex, twice, (void *)21, &f) != 0 ||
      result(f, CF_FOREVER, &v) != 0 || v->u.i != 42)
    return 1;
  unref(f);
  printf("dlopen consumer ok\n");
  return ex_free(ex);
}
C
cc $(pkg-config --cflags cfutures) "$tmp/dl.c" -o "$tmp/dl" -ldl
so=$(find "$libdir" -name 'libcfutures.so.*.*' | head -n 1)
[ -n "$so" ]
"$tmp/dl" "$so"

# The headers from C++ too (extern "C", the inline parts, the macros).
cxx=$(command -v c++ || command -v clang++ || true)
if [ -n "$cxx" ]; then
  cat > "$tmp/consumer.cpp" <<'CXX'
#include <cf/cfutures.h>
#include <cstdio>
static int square(void *arg, cf_value *r) {
  r->u.i = (intptr_t)arg * (intptr_t)arg;
  return 0;
}
CF_MAP_CHUNK_FN(square_chunks, square)
int main() {
  cf_executor *ex;
  cf_map *m;
  cf_range_iter it = cf_range_iter_init(0, 1000, 1);
  cf_map_opts o{};
  o.chunksize = 100;
  o.chunk_fn = square_chunks;
  if (cf_thread_pool_new(nullptr, &ex) != 0 ||
      cf_executor_map(ex, square, cf_range_iter_next, &it, &o, &m) != 0)
    return 1;
  cf_value v;
  long long sum = 0;
  while (cf_map_next(m, &v) == 1)
    sum += v.u.i;
  cf_map_free(m);
  std::printf("c++ consumer ok (%lld)\n", sum);
  return cf_executor_free(ex) != 0 || sum != 332833500;
}
CXX
  "$cxx" -Wall -Wextra -Werror "$tmp/consumer.cpp" $(pkg-config --cflags cfutures) \
    "$libdir/libcfutures.a" $(pkg-config --libs --static cfutures | sed 's/-lcfutures//') \
    -o "$tmp/cxx"
  "$tmp/cxx"
else
  echo "no C++ compiler: the C++ consumer is skipped"
fi

mkdir "$tmp/cm"
cp "$tmp/consumer.c" "$tmp/cm/"
cat > "$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(cfutures 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE cfutures::cfutures)
add_executable(consumer_static consumer.c)
target_link_libraries(consumer_static PRIVATE cfutures::cfutures_static)
CM
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/cm/build/consumer"
"$tmp/cm/build/consumer_static"

# Only the public API is exported from the shared library.
so=$(find "$libdir" -name 'libcfutures.so.*.*' | head -n 1)
bad=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^cf_' | grep -v '^_' || true)
if [ -n "$bad" ]; then
  echo "unexpected exported symbols:" $bad >&2
  exit 1
fi
echo "install, pkg-config and find_package: ok"
