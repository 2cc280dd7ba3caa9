/*
 * fuzz_http_request.c - libFuzzer target for the flag server's request
 * parser (apps/flags/http_request.c). Each input is parsed as a request
 * head; a head that parses has its target cleaned as the server would.
 * Besides the sanitizers' checks (out-of-bounds reads, UB), it traps if a
 * result breaks the parser's promises: a target outside the input, a
 * cleaned path that is absolute or climbs with "..", or holds a NUL,
 * a control character or a backslash.
 *
 *   make test-fuzz     (a short run, part of make test)
 */
#include <stdint.h>
#include <string.h>

#include "http_request.h"

static void check_path(const char *out) {
  size_t n = strlen(out);
  if (n > 0 && out[0] == '/')
    __builtin_trap();
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)out[i];
    if (c < 0x20 || c == 0x7f || c == '\\')
      __builtin_trap();
  }
  /* no ".." segment, no empty segment */
  const char *p = out;
  while (*p) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 0 || (len == 2 && p[0] == '.' && p[1] == '.') ||
        (len == 1 && p[0] == '.'))
      __builtin_trap();
    p += len;
    if (*p == '/')
      p++;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  http_request rq;
  char out[1024];
  if (http_parse_request(buf, size, &rq) == 0) {
    if (rq.target < buf || rq.target + rq.target_len > buf + size ||
        rq.target_len == 0 || strlen(rq.method_name) == 0 ||
        (rq.minor != 0 && rq.minor != 1))
      __builtin_trap();
    if (http_clean_path(rq.target, rq.target_len, out, sizeof out) == 0)
      check_path(out);
  }
  /* The input as a bare target too, with a small output buffer. */
  char small[16];
  if (http_clean_path(buf, size, small, sizeof small) == 0)
    check_path(small);
  if (http_clean_path(buf, size, out, sizeof out) == 0)
    check_path(out);
  return 0;
}
