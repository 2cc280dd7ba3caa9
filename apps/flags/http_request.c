/*
 * The flag server's request parser (http_request.h). Strict on purpose:
 * anything that RFC 9112 does not allow in a request head is a 400, so
 * that hostile or confused input ends with an error answer and a closed
 * connection rather than with a guess.
 */
#include "http_request.h"

#include <string.h>

/* tchar of RFC 9110: the characters of a token. */
static bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return true;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP, HTAB: what a field value may hold (obs-text too). */
static bool is_value_char(unsigned char c) {
  return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

static bool ieq(const char *a, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m)
    return false;
  for (size_t i = 0; i < n; i++) {
    char x = a[i], y = lit[i];
    if (x >= 'A' && x <= 'Z')
      x = (char)(x - 'A' + 'a');
    if (x != y)
      return false;
  }
  return true;
}

/* The next line of buf[*pos..len), ending in CRLF; its length without the
 * CRLF, or -1 if there is none or a bare CR or LF is inside. */
static long next_line(const char *buf, size_t len, size_t *pos) {
  size_t i = *pos;
  while (i < len && buf[i] != '\r' && buf[i] != '\n')
    i++;
  if (i + 1 >= len || buf[i] != '\r' || buf[i + 1] != '\n')
    return -1;
  long n = (long)(i - *pos);
  *pos = i + 2;
  return n;
}

/* Connection: a comma-separated token list. */
static void parse_connection(const char *v, size_t n, http_request *req) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
      i++;
    if (ieq(v + s, i - s, "close"))
      req->keep_alive = false;
    else if (ieq(v + s, i - s, "keep-alive"))
      req->keep_alive = true;
  }
}

static int parse_request_line(const char *l, size_t n, http_request *req) {
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)l[i]))
    i++;
  if (i == 0 || i > HTTP_MAX_METHOD || i >= n || l[i] != ' ')
    return 400;
  memcpy(req->method_name, l, i);
  req->method_name[i] = '\0';
  req->method = strcmp(req->method_name, "GET") == 0    ? HTTP_GET
                : strcmp(req->method_name, "HEAD") == 0 ? HTTP_HEAD
                                                        : HTTP_OTHER;
  size_t t = ++i;
  while (i < n && (unsigned char)l[i] > 0x20 && l[i] != 0x7f)
    i++;
  if (i == t || i >= n || l[i] != ' ')
    return 400;
  req->target = l + t;
  req->target_len = i - t;
  i++;
  if (n - i != 8 || memcmp(l + i, "HTTP/", 5) != 0 || l[i + 6] != '.' ||
      l[i + 5] < '0' || l[i + 5] > '9' || l[i + 7] < '0' || l[i + 7] > '9')
    return 400;
  if (l[i + 5] != '1' || (l[i + 7] != '0' && l[i + 7] != '1'))
    return 505;
  req->minor = l[i + 7] - '0';
  req->keep_alive = req->minor == 1;
  return 0;
}

static int parse_content_length(const char *v, size_t n, http_request *req) {
  if (n == 0 || n > 15)
    return 400;
  long long x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return 400;
    x = x * 10 + (v[i] - '0');
  }
  if (req->content_length >= 0 && req->content_length != x)
    return 400; /* two different lengths: request smuggling territory */
  req->content_length = x;
  return 0;
}

int http_parse_request(const char *buf, size_t len, http_request *req) {
  memset(req, 0, sizeof *req);
  req->content_length = -1;
  if (len > HTTP_MAX_HEAD)
    return 431;
  size_t pos = 0;
  long n = next_line(buf, len, &pos);
  if (n <= 0)
    return 400;
  int rc = parse_request_line(buf, (size_t)n, req);
  if (rc != 0)
    return rc;
  for (;;) {
    size_t start = pos;
    n = next_line(buf, len, &pos);
    if (n < 0)
      return 400;
    if (n == 0)
      break; /* the blank line */
    const char *l = buf + start;
    if (++req->nfields > HTTP_MAX_FIELDS)
      return 431;
    size_t i = 0;
    while (i < (size_t)n && is_tchar((unsigned char)l[i]))
      i++;
    if (i == 0 || i >= (size_t)n || l[i] != ':')
      return 400; /* also obs-fold and whitespace before the colon */
    size_t name_len = i++;
    while (i < (size_t)n && (l[i] == ' ' || l[i] == '\t'))
      i++;
    size_t vs = i, ve = (size_t)n;
    while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
      ve--;
    for (size_t k = vs; k < ve; k++)
      if (!is_value_char((unsigned char)l[k]))
        return 400;
    const char *v = l + vs;
    size_t vn = ve - vs;
    if (ieq(l, name_len, "host"))
      req->has_host = true;
    else if (ieq(l, name_len, "connection"))
      parse_connection(v, vn, req);
    else if (ieq(l, name_len, "content-length")) {
      if ((rc = parse_content_length(v, vn, req)) != 0)
        return rc;
    } else if (ieq(l, name_len, "transfer-encoding"))
      req->has_transfer_encoding = true;
  }
  if (pos != len)
    return 400; /* bytes after the blank line belong to no head */
  if (req->minor == 1 && !req->has_host)
    return 400;
  if (req->has_transfer_encoding)
    return 501;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int http_clean_path(const char *target, size_t len, char *out, size_t cap) {
  if (cap == 0)
    return 414;
  out[0] = '\0';
  if (len == 0 || target[0] != '/')
    return 400;
  size_t o = 0;
  size_t i = 0;
  while (i < len && target[i] != '?' && target[i] != '#') {
    /* one segment, decoded into out[o..] */
    while (i < len && target[i] == '/')
      i++;
    if (i >= len || target[i] == '?' || target[i] == '#')
      break;
    size_t seg = o;
    if (seg != 0) {
      if (o + 1 >= cap)
        return 414;
      out[o++] = '/';
      seg = o;
    }
    while (i < len && target[i] != '/' && target[i] != '?' &&
           target[i] != '#') {
      int c = (unsigned char)target[i];
      if (c == '%') {
        int hi = i + 2 < len ? hexval(target[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(target[i + 2]) : -1;
        if (lo < 0)
          return 400;
        c = hi * 16 + lo;
        i += 3;
      } else
        i++;
      if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
        return 400; /* NUL, controls, an encoded separator */
      if (o + 1 >= cap)
        return 414;
      out[o++] = (char)c;
    }
    size_t sl = o - seg;
    if (sl == 2 && out[seg] == '.' && out[seg + 1] == '.')
      return 400;
    if (sl == 1 && out[seg] == '.') /* drop "." with its separator */
      o = seg > 0 ? seg - 1 : 0;
  }
  out[o] = '\0';
  return 0;
}

const char *http_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 418: return "I'm a teapot";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "";
  }
}
