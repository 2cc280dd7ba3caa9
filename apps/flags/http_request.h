/*
 * http_request.h - the flag server's HTTP/1.x request parser: a small,
 * strict parser of a request head (request line and header fields, as
 * RFC 9112 writes them), and the check that turns a request target into
 * a safe relative path. It allocates nothing and never reads outside the
 * buffer it is given; fuzz/fuzz_http_request.c drives it with libFuzzer.
 */
#ifndef FLAGS_HTTP_REQUEST_H
#define FLAGS_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

/** Limits the parser enforces. */
enum {
  HTTP_MAX_HEAD = 8192,  /* request line + fields + blank line */
  HTTP_MAX_FIELDS = 100, /* header fields */
  HTTP_MAX_METHOD = 16
};

typedef enum { HTTP_GET, HTTP_HEAD, HTTP_OTHER } http_method;

typedef struct http_request {
  http_method method;
  char method_name[HTTP_MAX_METHOD + 1];
  const char *target; /* points into the parsed buffer; not NUL-ended */
  size_t target_len;
  int minor;          /* HTTP/1.minor: 0 or 1 */
  bool keep_alive;    /* what the client asked for, with the version's default */
  long long content_length; /* -1: none */
  bool has_transfer_encoding;
  bool has_host;
  size_t nfields;
} http_request;

/**
 * Parses the request head buf[0..len), which ends with the blank line
 * (CRLF CRLF). Returns 0, or the HTTP status to answer with: 400 (a
 * malformed line, a bad field, a missing Host in HTTP/1.1, conflicting
 * Content-Length), 431 (too many fields), 505 (not HTTP/1.0 or 1.1),
 * 501 (a Transfer-Encoding, which this server does not accept).
 */
int http_parse_request(const char *buf, size_t len, http_request *req);

/**
 * Turns the target's path (origin form: "/a/b.gif?query") into a
 * relative path in out ("a/b.gif"): percent-decoded, empty and "."
 * segments dropped. Returns 0, or 400 for a target that is not a path,
 * bad percent-encoding, a NUL or control character, a ".." segment (also
 * encoded), or a path that does not fit in cap bytes (414).
 */
int http_clean_path(const char *target, size_t len, char *out, size_t cap);

/** The reason phrase of a status ("Not Found"), "" if unknown. */
const char *http_reason(int status);

#endif /* FLAGS_HTTP_REQUEST_H */
