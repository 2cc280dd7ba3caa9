/*
 * flags_server - the seeds' LOCAL, DELAY and ERROR test servers in one
 * program, on one thread of the cfutures loop: one task per connection.
 *
 *   flags_server [--port P] [--bind ADDR] [--dir DIR] [--delay MIN[:MAX]]
 *                [--error-rate P] [--preset LOCAL|DELAY|ERROR] [--quiet]
 *                [--header-timeout S] [--shared-stack]
 *
 * It serves GET and HEAD for the files under DIR (default: Debian's
 * famfamfam flags, /usr/share/flags/countries/16x11), in two layouts:
 * the seeds' /flags/{cc}/{cc}.gif (lower-case cc) maps to DIR/{cc}.gif,
 * and any other /path maps to DIR/path. Each request waits a delay drawn
 * uniformly from [MIN, MAX] seconds (the book's slow server: 0.5 to 5),
 * then is answered "418 I'm a teapot" with probability P, else with the
 * file or 404. Every answer has Content-Type and Content-Length; HTTP/1.1
 * connections are kept alive. A line per request goes to stdout ("CN
 * delay: 0.84s" when delayed, as the book's server prints; an access line
 * otherwise) unless --quiet.
 *
 * Presets (options given after --preset override it): LOCAL port 8000,
 * no delay; DELAY port 8001, delay 0.5:5; ERROR port 8002, delay 0.5:5,
 * error rate 0.25. Port 0 picks a free port. The first line printed is
 * "flags_server: listening on http://ADDR:PORT/" (then flushed), so a
 * script can read the port.
 *
 * Hostile input gets an error answer and a closed connection: a request
 * head over 8 KiB (414/431), a head not complete within --header-timeout
 * seconds (default 10; 408, or a silent close for an idle keep-alive
 * connection), malformed lines or fields (400), "..", encoded separators
 * or NULs in the path (400), symlinks leading out of DIR (404: files are
 * opened with openat2(RESOLVE_BENEATH)), bodies (413), other methods
 * (405). Files are read once and kept in memory (up to 4096 files of at
 * most 16 MiB, 256 MiB in all; larger files are refused with 500).
 *
 * SIGINT or SIGTERM stops it: no new connections, 2 s for those running,
 * then it prints how many connections and requests it served.
 */
#define _GNU_SOURCE
#include <cf/cfutures.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "http_request.h"

#define DEFAULT_DIR "/usr/share/flags/countries/16x11"
#define MAX_FILE ((size_t)16 << 20)
#define MAX_CACHE_BYTES ((size_t)256 << 20)
#define CACHE_SLOTS 8192 /* power of two; holds up to half as many files */

typedef struct config {
  const char *bind;
  int port;
  const char *dir;
  double delay_min, delay_max;
  double error_rate;
  bool quiet;
  bool shared_stack;
  int64_t header_timeout_ns;
} config;

typedef struct file_entry {
  char *path; /* relative to the root; NULL: free slot */
  char *data;
  size_t len;
  const char *ctype;
} file_entry;

static struct {
  const config *cfg;
  int root_fd;
  file_entry cache[CACHE_SLOTS];
  size_t cache_files, cache_bytes;
  uint64_t rng;
  uint64_t requests;
  char date[64];
  time_t date_sec;
} S;

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */

static double rand01(void) { /* xorshift64*: the loop's thread only */
  S.rng ^= S.rng >> 12;
  S.rng ^= S.rng << 25;
  S.rng ^= S.rng >> 27;
  return (double)((S.rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static const char *http_date(void) {
  time_t now = time(NULL);
  if (now != S.date_sec) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(S.date, sizeof S.date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    S.date_sec = now;
  }
  return S.date;
}

static const char *content_type(const char *path) {
  static const struct { const char *ext, *type; } types[] = {
      {".gif", "image/gif"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".svg", "image/svg+xml"},
      {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},
      {".txt", "text/plain; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
  };
  const char *dot = strrchr(path, '.');
  if (dot != NULL && strchr(dot, '/') == NULL)
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
      if (strcasecmp(dot, types[i].ext) == 0)
        return types[i].type;
  return "application/octet-stream";
}

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Python's f'{delay:0.2}': two significant digits; a fixed-point form
 * keeps at least one decimal, and a number that has no room for one in
 * two digits (10 and up) goes to exponent form, as Python's does:
 * 0.5 -> "0.5", 3.0 -> "3.0", 12.0 -> "1.2e+01", 10.0 -> "1e+01". */
static void format_delay(double d, char *buf, size_t size) {
  snprintf(buf, size, "%.2g", d);
  if (strpbrk(buf, ".e") != NULL)
    return;
  if (strlen(buf) == 1 || (buf[0] == '-' && strlen(buf) == 2)) {
    if (strlen(buf) + 2 < size)
      strcat(buf, ".0");
    return;
  }
  snprintf(buf, size, "%.1e", d); /* "1.0e+01": Python drops the ".0" */
  char *dot = strstr(buf, ".0e");
  if (dot != NULL)
    memmove(dot, dot + 2, strlen(dot + 2) + 1);
}

/* ---------------------------------------------------------------------- */
/* Files                                                                  */

/* Opens root/rel without leaving root (no "..", no symlink out, no
 * absolute jump). -errno on failure. */
static int open_beneath(const char *rel) {
  /* O_NONBLOCK: a FIFO under the root must not block the loop's thread
   * in open (it is refused as not a regular file afterwards). */
  const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  struct open_how how = {.flags = flags,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
  long fd = syscall(SYS_openat2, S.root_fd, rel, &how, sizeof how);
  if (fd >= 0)
    return (int)fd;
  if (errno != ENOSYS)
    return -errno;
  /* No openat2 (kernels before 5.6, some seccomp filters): walk the path
   * one component at a time, refusing every symlink on the way (O_NOFOLLOW
   * alone would only check the last one). */
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", rel);
  int dir = S.root_fd;
  char *p = buf;
  for (;;) {
    char *slash = strchr(p, '/');
    if (slash != NULL)
      *slash = '\0';
    int f = openat(dir, p,
                   slash ? O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                         : flags | O_NOFOLLOW);
    int e = errno;
    if (dir != S.root_fd)
      close(dir);
    if (f < 0)
      return -e;
    if (slash == NULL)
      return f;
    dir = f;
    p = slash + 1;
  }
}

/* Reads the file into memory. 0 and *e filled, 404, or 500. */
static int load_file(const char *rel, file_entry *e) {
  int fd = open_beneath(rel);
  if (fd < 0)
    return fd == -ENOMEM || fd == -EMFILE || fd == -ENFILE ? 503 : 404;
  struct stat st;
  int status = 0;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    status = 404;
  else if ((size_t)st.st_size > MAX_FILE)
    status = 500;
  char *data = NULL;
  size_t len = 0;
  if (status == 0) {
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL)
      status = 503;
    while (status == 0 && len < (size_t)st.st_size) {
      ssize_t n = read(fd, data + len, (size_t)st.st_size - len);
      if (n <= 0) {
        if (n < 0 && errno == EINTR)
          continue;
        if (n < 0)
          status = 500;
        break; /* a file that shrank: serve what is there */
      }
      len += (size_t)n;
    }
  }
  close(fd);
  if (status != 0) {
    free(data);
    return status;
  }
  e->path = strdup(rel);
  if (e->path == NULL) {
    free(data);
    return 503;
  }
  e->data = data;
  e->len = len;
  e->ctype = content_type(rel);
  return 0;
}

/* The cached file for rel, loading it on first use. 0 and *out, or an
 * HTTP status. A file that does not fit the cache is loaded into *tmp,
 * which the caller frees. */
static int lookup(const char *rel, const file_entry **out, file_entry *tmp) {
  uint64_t h = hash_str(rel);
  size_t i = (size_t)h & (CACHE_SLOTS - 1);
  for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
    file_entry *e = &S.cache[i];
    if (e->path == NULL)
      break;
    if (strcmp(e->path, rel) == 0) {
      *out = e;
      return 0;
    }
  }
  int status = load_file(rel, tmp);
  if (status != 0)
    return status;
  if (S.cache_files < CACHE_SLOTS / 2 &&
      S.cache_bytes + tmp->len <= MAX_CACHE_BYTES) {
    S.cache[i] = *tmp;
    memset(tmp, 0, sizeof *tmp);
    S.cache_files++;
    S.cache_bytes += S.cache[i].len;
    *out = &S.cache[i];
  } else
    *out = tmp;
  return 0;
}

/* The seeds' layout: flags/xx/xx.gif is the root's xx.gif. */
static void map_flags_layout(char *rel) {
  if (strncmp(rel, "flags/", 6) != 0)
    return;
  const char *p = rel + 6;
  if (strlen(p) == 9 && p[0] >= 'a' && p[0] <= 'z' && p[1] >= 'a' &&
      p[1] <= 'z' && p[2] == '/' && p[3] == p[0] && p[4] == p[1] &&
      strcmp(p + 5, ".gif") == 0)
    memmove(rel, p + 3, 7); /* "xx.gif" and its NUL */
}

/* ---------------------------------------------------------------------- */
/* Answers                                                                */

/* Bodies up to this size go out with their head in one write; larger ones
 * are written from the cache entry in pieces of this size, each waiting
 * for room under the stream's high-water mark, so that a client that does
 * not read holds at most about that much of the server's memory. */
#define ONE_WRITE ((size_t)64 << 10)

/* Writes one answer: head, then body unless HEAD. */
static int answer(cf_stream *s, int status, const char *ctype, const char *body,
                  size_t len, bool head_only, bool keep_alive,
                  const char *extra) {
  char hbuf[512];
  int hn = snprintf(hbuf, sizeof hbuf,
                    "HTTP/1.1 %d %s\r\n"
                    "Server: cfutures-flags/0.1\r\n"
                    "Date: %s\r\n"
                    "Content-Type: %s\r\n"
                    "Content-Length: %zu\r\n"
                    "%s"
                    "Connection: %s\r\n\r\n",
                    status, http_reason(status), http_date(), ctype, len,
                    extra ? extra : "", keep_alive ? "keep-alive" : "close");
  size_t blen = head_only ? 0 : len;
  if (blen > ONE_WRITE) {
    int rc = cf_stream_write(s, hbuf, (size_t)hn, CF_SEC(30));
    for (size_t off = 0; rc == 0 && off < blen; off += ONE_WRITE)
      rc = cf_stream_write(s, body + off,
                           blen - off < ONE_WRITE ? blen - off : ONE_WRITE,
                           CF_SEC(30));
    return rc;
  }
  char *out = malloc((size_t)hn + blen);
  if (out == NULL)
    return CF_ENOMEM;
  memcpy(out, hbuf, (size_t)hn);
  if (blen != 0)
    memcpy(out + hn, body, blen);
  int rc = cf_stream_write(s, out, (size_t)hn + blen, CF_SEC(30));
  free(out);
  return rc;
}

static int answer_error(cf_stream *s, int status, bool head_only,
                        bool keep_alive) {
  char body[128];
  int n = snprintf(body, sizeof body, "%d %s\n", status, http_reason(status));
  const char *extra = status == 405 ? "Allow: GET, HEAD\r\n" : NULL;
  return answer(s, status, "text/plain; charset=utf-8", body, (size_t)n,
                head_only, keep_alive, extra);
}

static void log_request(const cf_stream *s, const http_request *rq,
                        int status, double delay) {
  if (S.cfg->quiet)
    return;
  if (delay >= 0) {
    /* The book's slow server: cc = self.path[-6:-4].upper() */
    char cc[3] = "??";
    if (rq->target_len >= 6) {
      cc[0] = rq->target[rq->target_len - 6];
      cc[1] = rq->target[rq->target_len - 5];
      for (int i = 0; i < 2; i++)
        if (cc[i] >= 'a' && cc[i] <= 'z')
          cc[i] = (char)(cc[i] - 'a' + 'A');
        else if ((unsigned char)cc[i] < 0x20 || (unsigned char)cc[i] > 0x7e)
          cc[i] = '?';
    }
    char d[32];
    format_delay(delay, d, sizeof d);
    printf("%s delay: %ss\n", cc, d);
  } else {
    char peer[64] = "-";
    cf_stream_get_peer(s, peer, sizeof peer);
    int tl = rq->target_len > 200 ? 200 : (int)rq->target_len;
    printf("%s \"%s %.*s HTTP/1.%d\" %d\n", peer, rq->method_name, tl,
           rq->target, rq->minor, status);
  }
  fflush(stdout);
}

/* ---------------------------------------------------------------------- */
/* A connection                                                           */

/* Reads one request head into a fresh buffer. Returns its length (> 0),
 * or 0 for the end of the connection: then *status is the HTTP status to
 * answer before closing (408, 414, 431), or 0 to close without a word
 * (end of stream, an idle keep-alive connection, a stream error, the
 * server stopping). */
static ssize_t read_head(cf_stream *s, char **out, int *status) {
  *status = 0;
  char *buf = malloc(HTTP_MAX_HEAD);
  *out = buf;
  if (buf == NULL)
    return 0;
  ssize_t n = cf_stream_read_until(s, "\r\n\r\n", 4, buf, HTTP_MAX_HEAD,
                                   S.cfg->header_timeout_ns);
  if (n > 0)
    return n;
  if (n == CF_ENOBUFS) {
    /* A full buffer without the blank line: too long a request line (no
     * line end at all) or too many header bytes. */
    ssize_t k = cf_stream_read(s, buf, HTTP_MAX_HEAD, 0);
    *status = k > 0 && memchr(buf, '\n', (size_t)k) == NULL ? 414 : 431;
  } else if (n == CF_ETIMEDOUT) {
    /* Idle (nothing arrived): close quietly; a slow sender: 408. */
    ssize_t k = cf_stream_read(s, buf, 1, 0);
    *status = k > 0 ? 408 : 0;
  }
  return 0;
}

/* Ends a connection after an error answer: half-close, then read and drop
 * what the client still sends for a moment, so that closing with unread
 * bytes (pipelined requests) does not reset the connection and destroy
 * the answer before the client reads it. */
static void linger_close(cf_stream *s) {
  if (cf_stream_shutdown(s, CF_SEC(5)) == 0) {
    char sink[1024];
    size_t dropped = 0;
    int64_t deadline = cf_now_ns() + CF_SEC(1);
    while (dropped < ((size_t)64 << 10)) {
      int64_t left = deadline - cf_now_ns();
      ssize_t k = left > 0 ? cf_stream_read(s, sink, sizeof sink, left) : 0;
      if (k <= 0)
        break;
      dropped += (size_t)k;
    }
  }
  cf_stream_close(s);
}

static int serve_conn(cf_stream *s, void *arg) {
  (void)arg;
  for (;;) {
    char *head;
    int hstatus;
    ssize_t n = read_head(s, &head, &hstatus);
    if (n <= 0) {
      free(head);
      if (hstatus != 0 && answer_error(s, hstatus, false, false) == 0)
        linger_close(s);
      else
        cf_stream_close(s);
      return 0;
    }
    http_request rq;
    int status = http_parse_request(head, (size_t)n, &rq);
    bool parsed = status == 0;
    char rel[1024];
    if (status == 0 && rq.method == HTTP_OTHER)
      status = 405;
    if (status == 0 && rq.content_length > 0)
      status = 413; /* GET and HEAD carry no body here */
    if (status == 0)
      status = http_clean_path(rq.target, rq.target_len, rel, sizeof rel);
    /* A HEAD gets no body, refused or not (RFC 9110 9.3.2), once its
     * request line is known. */
    bool head_only = parsed && rq.method == HTTP_HEAD;
    if (status != 0) {
      /* Malformed: answer, then close (the stream's framing is lost). */
      int rc = answer_error(s, status, head_only, false);
      free(head);
      if (rc == 0)
        linger_close(s);
      else
        cf_stream_close(s);
      return 0;
    }
    S.requests++;
    double delay = -1;
    if (S.cfg->delay_max > 0) {
      delay = S.cfg->delay_min +
              (S.cfg->delay_max - S.cfg->delay_min) * rand01();
      log_request(s, &rq, 0, delay);
    }
    if (delay >= 0) { /* logged: no need to hold the head while asleep */
      free(head);
      head = NULL;
    }
    if (delay > 0 && cf_sleep((int64_t)(delay * 1e9)) != 0) {
      cf_stream_close(s); /* cancelled: the server is stopping */
      return 0;
    }
    int rc;
    if (S.cfg->error_rate > 0 && rand01() < S.cfg->error_rate) {
      status = 418;
      rc = answer_error(s, 418, head_only, rq.keep_alive);
    } else {
      const file_entry *fe = NULL;
      file_entry tmp = {0};
      /* The seeds' flags/xx/xx.gif is first looked for as a bare xx.gif
       * (the default directory's layout: one lookup, cached), then as
       * asked (a --dir of the book's own tree, flags/cn/cn.gif). */
      char bare[sizeof rel];
      memcpy(bare, rel, sizeof bare);
      map_flags_layout(bare);
      bool mapped = strcmp(bare, rel) != 0;
      status = !rel[0] ? 404 : lookup(mapped ? bare : rel, &fe, &tmp);
      if (status == 404 && mapped)
        status = lookup(rel, &fe, &tmp);
      if (status == 0) {
        status = 200;
        rc = answer(s, 200, fe->ctype, fe->data, fe->len, head_only,
                    rq.keep_alive, NULL);
      } else
        rc = answer_error(s, status, head_only, rq.keep_alive);
      free(tmp.path);
      free(tmp.data);
    }
    if (delay < 0)
      log_request(s, &rq, status, -1);
    free(head); /* rq.target pointed into it */
    if (rc != 0 || !rq.keep_alive) {
      if (rc == 0)
        cf_stream_drain(s, CF_SEC(5));
      cf_stream_close(s);
      return 0;
    }
  }
}

/* ---------------------------------------------------------------------- */
/* The server                                                             */

static void on_stop_signal(void *arg, int signum) {
  (void)signum;
  cf_event_set(arg);
}

static int serve(void *arg, cf_value *result) {
  (void)result;
  const config *c = arg;
  /* The signals first: once the port is printed, a SIGTERM must find
   * them handled (a script may stop the server at once). */
  cf_event *stop;
  cf_signal_watch *intr, *term;
  if (cf_event_new(&stop) != 0 ||
      cf_signal_watch_start(cf_loop_current(), SIGINT, on_stop_signal, stop,
                            &intr) != 0 ||
      cf_signal_watch_start(cf_loop_current(), SIGTERM, on_stop_signal, stop,
                            &term) != 0)
    return cf_raise(CF_ENOMEM, "cannot watch SIGINT and SIGTERM");
  cf_server *srv;
  int rc = cf_server_start(c->bind, c->port, 4096, serve_conn, NULL, &srv);
  if (rc != 0)
    return cf_raise(rc, "cannot listen on %s port %d: %s", c->bind, c->port,
                    cf_strerror(rc));
  const char *b = c->bind;
  bool v6 = strchr(b, ':') != NULL;
  printf("flags_server: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", b,
         v6 ? "]" : "", cf_server_get_port(srv));
  fflush(stdout);
  cf_event_wait(stop, CF_FOREVER);
  uint64_t conns = cf_server_get_accepted(srv);
  rc = cf_server_stop(srv, CF_SEC(2));
  cf_signal_watch_free(intr);
  cf_signal_watch_free(term);
  cf_event_free(stop);
  if (!c->quiet)
    printf("flags_server: stopped after %llu connections, %llu requests%s\n",
           (unsigned long long)conns, (unsigned long long)S.requests,
           rc == CF_ETIMEDOUT ? " (some were cancelled)" : "");
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: flags_server [--port P] [--bind ADDR] [--dir DIR]\n"
          "                    [--delay MIN[:MAX]] [--error-rate P]\n"
          "                    [--preset LOCAL|DELAY|ERROR] [--quiet]\n"
          "                    [--header-timeout SECONDS] [--shared-stack]\n");
}

static bool parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double d = strtod(s, &end);
  if (end == s || *end != '\0' || errno != 0 || d < 0 || d != d || d > 1e6)
    return false;
  *out = d;
  return true;
}

int main(int argc, char **argv) {
  config c = {.bind = "127.0.0.1", .port = 8000, .dir = DEFAULT_DIR,
              .header_timeout_ns = CF_SEC(10)};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0)
      c.quiet = true;
    else if (strcmp(a, "--shared-stack") == 0)
      c.shared_stack = true;
    else if (v == NULL) {
      usage();
      return 2;
    } else if (strcmp(a, "--port") == 0) {
      char *end;
      long p = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || p < 0 || p > 65535) {
        fprintf(stderr, "flags_server: bad port: %s\n", v);
        return 2;
      }
      c.port = (int)p;
      i++;
    } else if (strcmp(a, "--bind") == 0) {
      c.bind = v;
      i++;
    } else if (strcmp(a, "--dir") == 0) {
      c.dir = v;
      i++;
    } else if (strcmp(a, "--delay") == 0) {
      char tmp[64];
      snprintf(tmp, sizeof tmp, "%s", v);
      char *colon = strchr(tmp, ':');
      if (colon != NULL)
        *colon = '\0';
      if (!parse_double(tmp, &c.delay_min) ||
          !parse_double(colon ? colon + 1 : tmp, &c.delay_max) ||
          c.delay_max < c.delay_min) {
        fprintf(stderr, "flags_server: bad delay: %s (MIN[:MAX] seconds)\n", v);
        return 2;
      }
      i++;
    } else if (strcmp(a, "--error-rate") == 0) {
      if (!parse_double(v, &c.error_rate) || c.error_rate > 1) {
        fprintf(stderr, "flags_server: bad error rate: %s (0 to 1)\n", v);
        return 2;
      }
      i++;
    } else if (strcmp(a, "--header-timeout") == 0) {
      double t;
      if (!parse_double(v, &t) || t <= 0) {
        fprintf(stderr, "flags_server: bad header timeout: %s\n", v);
        return 2;
      }
      c.header_timeout_ns = (int64_t)(t * 1e9);
      i++;
    } else if (strcmp(a, "--preset") == 0) {
      if (strcasecmp(v, "LOCAL") == 0) {
        c.port = 8000, c.delay_min = c.delay_max = 0, c.error_rate = 0;
      } else if (strcasecmp(v, "DELAY") == 0) {
        c.port = 8001, c.delay_min = 0.5, c.delay_max = 5, c.error_rate = 0;
      } else if (strcasecmp(v, "ERROR") == 0) {
        c.port = 8002, c.delay_min = 0.5, c.delay_max = 5, c.error_rate = 0.25;
      } else {
        fprintf(stderr, "flags_server: unknown preset: %s\n", v);
        return 2;
      }
      i++;
    } else {
      usage();
      return 2;
    }
  }
  S.cfg = &c;
  S.root_fd = open(c.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (S.root_fd < 0) {
    fprintf(stderr, "flags_server: cannot open directory %s: %s\n", c.dir,
            strerror(errno));
    return 1;
  }
  S.rng = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
  if (S.rng == 0)
    S.rng = 1;
  signal(SIGPIPE, SIG_IGN);
  cf_raise_fd_limit(NULL);
  cf_loop_opts o = {.shared_stack = c.shared_stack, .name = "flags_server"};
  cf_future *f;
  int rc = cf_loop_run_main(serve, &c, &o, &f);
  if (rc != 0)
    fprintf(stderr, "flags_server: %s\n", cf_future_get_error(f).message);
  cf_future_unref(f);
  for (size_t i = 0; i < CACHE_SLOTS; i++) {
    free(S.cache[i].path);
    free(S.cache[i].data);
  }
  close(S.root_fd);
  return rc == 0 ? 0 : 1;
}
