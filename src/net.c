/*
 * net.c - TCP streams and servers for loop tasks (cf/net.h) on libuv's
 * uv_tcp_t.
 *
 * A stream buffers what libuv reads (up to IN_MAX, then it stops reading
 * until the task consumes: back-pressure towards the peer) and counts what
 * is queued for writing (a writer waits while it is above HWM). A task
 * that needs data or room waits on a future that the read or write
 * callback completes, so deadlines and cancellation are those of any
 * future wait. Requests (connect, write, shutdown, getaddrinfo) carry
 * their own allocation and are freed in their callbacks; a stream is
 * freed in uv_close's callback, after libuv has cancelled its requests.
 */
#define _GNU_SOURCE
#include "cf/net.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cf/future.h"
#include "common.h"
#include "loop_int.h"

enum { IN_MAX = 256 * 1024 };
#define HWM ((size_t)256 * 1024)

struct cf_stream {
  uv_tcp_t tcp; /* tcp.data = the stream */
  cf_loop *loop;
  char *in;
  size_t in_len, in_cap;
  bool reading, eof, closed;
  int rerr;
  cf__ltask *rwait; /* a reader waiting for data */
  size_t queued;    /* bytes in write requests not yet completed */
  int werr;
  cf__ltask *wwait; /* a writer waiting for queued <= wlimit */
  size_t wlimit;
  bool busy_r, busy_w;
  /* libuv has closed the handle (after cf_stream_close): the stream is
   * freed as soon as nothing holds it, neither a task inside a read or a
   * write (woken by the close, it returns CF_EBADF) nor the server's
   * connection task that owns it. */
  bool gone;
  bool pinned; /* a server's connection task holds it until it ends */
};

static void stream_release(cf_stream *s) {
  if (s->gone && !s->busy_r && !s->busy_w && !s->pinned) {
    free(s->in);
    free(s);
  }
}

/* Ends a read or a write call (busy: &s->busy_r or &s->busy_w): the
 * stream may be freed here if another task closed it meanwhile, so the
 * caller returns without touching it. */
static void end_call(cf_stream *s, bool *busy) {
  *busy = false;
  stream_release(s);
}

static int need_task(void) {
  return cf_task_current() != NULL && cf_loop_current() != NULL ? 0
                                                                : CF_ENOTTASK;
}

/* Parks the running task, recorded in *slot, until its waker (a libuv
 * callback) unparks it, the deadline or a cancellation; the slot is
 * cleared either way. No future: a waiting connection holds nothing but
 * its task (10,000 idle connections are 10,000 waits). */
static int wait_slot(cf__ltask **slot, int64_t deadline) {
  cf__ltask *t = cf__task_self();
  *slot = t;
  int rc = cf__task_park(t, deadline);
  if (*slot == t) /* not taken by a waker */
    *slot = NULL;
  return rc;
}

static void wake_slot(cf__ltask **slot) {
  cf__ltask *t = *slot;
  if (t != NULL) {
    *slot = NULL;
    cf__task_unpark(t);
  }
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                */

/* libuv reads into the loop's scratch buffer, and on_read keeps exactly
 * what arrived: 10,000 connections with a 64-byte message each in flight
 * hold 10,000 small allocations, not 10,000 read-sized buffers (a buffer
 * sized for the read and then mostly empty was 2 KiB of every
 * connection's memory in the echo benchmark). The copy is the price:
 * nothing next to the system call for small messages, a memcpy per 64 KiB
 * for bulk. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  cf_stream *s = h->data;
  char *scratch = cf__loop_read_scratch(s->loop);
  size_t room = IN_MAX - s->in_len; /* reading stops at IN_MAX */
  buf->base = scratch;
  buf->len = scratch == NULL ? 0 : room < CF__LOOP_READ_SCRATCH
                                       ? room
                                       : CF__LOOP_READ_SCRATCH;
}

/* Appends n bytes to the stream's input: the first bytes get a buffer of
 * their size, later ones at least double it (bulk transfers copy each
 * byte O(1) times). False if out of memory. */
static bool keep_input(cf_stream *s, const char *p, size_t n) {
  if (s->in_len + n > s->in_cap) {
    size_t cap = s->in_cap == 0 ? n : 2 * s->in_cap;
    if (cap < s->in_len + n)
      cap = s->in_len + n;
    if (cap > IN_MAX && s->in_len + n <= IN_MAX)
      cap = IN_MAX;
    char *q = realloc(s->in, cap);
    if (q == NULL)
      return false;
    s->in = q;
    s->in_cap = cap;
  }
  memcpy(s->in + s->in_len, p, n);
  s->in_len += n;
  return true;
}

static void stop_reading(cf_stream *s) {
  if (s->reading) {
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = false;
  }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  cf_stream *s = st->data;
  if (n > 0) {
    if (!keep_input(s, buf->base, (size_t)n)) {
      s->rerr = CF_ENOMEM; /* the bytes are lost: say so, read no more */
      stop_reading(s);
    } else if (s->in_len >= IN_MAX) {
      stop_reading(s); /* full: the peer waits until the task reads */
    }
  } else if (n == UV_ENOBUFS) {
    s->rerr = CF_ENOMEM; /* no scratch buffer */
    stop_reading(s);
  } else if (n == UV_EOF) {
    s->eof = true;
    stop_reading(s);
  } else if (n < 0) {
    s->rerr = (int)n;
    stop_reading(s);
  }
  wake_slot(&s->rwait);
}

static int start_reading(cf_stream *s) {
  if (s->reading || s->eof || s->rerr != 0 || s->closed)
    return 0;
  if (s->in_len >= IN_MAX)
    return 0;
  int rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (rc == 0)
    s->reading = true;
  return rc;
}

/* Waits until something is buffered, or end of stream, or an error. */
static int fill(cf_stream *s, int64_t deadline) {
  while (s->in_len == 0 && !s->eof && s->rerr == 0) {
    if (s->closed) /* by another task, while this one waited */
      return CF_EBADF;
    int rc = start_reading(s);
    if (rc != 0)
      return rc;
    rc = wait_slot(&s->rwait, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Drops n buffered bytes (consumed) and reads on if there is room. An
 * emptied buffer is freed: an idle connection holds no input memory (the
 * next read allocates it again; 10,000 idle connections would otherwise
 * keep 10,000 buffers). */
static void consume(cf_stream *s, size_t n) {
  memmove(s->in, s->in + n, s->in_len - n);
  s->in_len -= n;
  if (s->in_len == 0) {
    free(s->in);
    s->in = NULL;
    s->in_cap = 0;
  }
  start_reading(s);
}

static int check_stream(cf_stream *s) {
  if (s == NULL)
    return CF_EINVAL;
  int rc = need_task();
  if (rc != 0)
    return rc;
  if (cf_loop_current() != s->loop)
    return CF_EWRONGTHREAD;
  return s->closed ? CF_EBADF : 0;
}

ssize_t cf_stream_read(cf_stream *s, void *buf, size_t len,
                       int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if ((buf == NULL && len > 0) || timeout_ns < 0)
    return CF_EINVAL;
  if (len == 0)
    return 0;
  if (s->busy_r)
    return CF_EBUSY;
  s->busy_r = true;
  rc = fill(s, cf_deadline_after(timeout_ns));
  ssize_t n;
  if (rc != 0) {
    n = rc;
  } else if (s->in_len > 0) {
    size_t k = s->in_len < len ? s->in_len : len;
    memcpy(buf, s->in, k);
    consume(s, k);
    n = (ssize_t)k;
  } else {
    n = s->rerr != 0 ? s->rerr : 0; /* end of stream */
  }
  end_call(s, &s->busy_r);
  return n;
}

int cf_stream_wait_readable(cf_stream *s, int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if (timeout_ns < 0)
    return CF_EINVAL;
  if (s->busy_r)
    return CF_EBUSY;
  s->busy_r = true;
  rc = fill(s, cf_deadline_after(timeout_ns));
  end_call(s, &s->busy_r);
  return rc;
}

int cf_stream_read_exactly(cf_stream *s, void *buf, size_t len,
                           int64_t timeout_ns, size_t *got) {
  if (got != NULL)
    *got = 0;
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if ((buf == NULL && len > 0) || timeout_ns < 0)
    return CF_EINVAL;
  if (s->busy_r)
    return CF_EBUSY;
  s->busy_r = true;
  int64_t deadline = cf_deadline_after(timeout_ns);
  size_t done = 0;
  while (done < len) {
    rc = fill(s, deadline);
    if (rc != 0)
      break;
    if (s->in_len == 0) {
      rc = s->rerr != 0 ? s->rerr : CF_EEOF;
      break;
    }
    size_t k = s->in_len < len - done ? s->in_len : len - done;
    memcpy((char *)buf + done, s->in, k);
    consume(s, k);
    done += k;
  }
  if (got != NULL)
    *got = done;
  end_call(s, &s->busy_r);
  return done == len ? 0 : rc;
}

static const char *find(const char *hay, size_t n, const char *needle,
                        size_t m) {
  if (m == 0 || n < m)
    return NULL;
  for (size_t i = 0; i + m <= n; i++)
    if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
      return hay + i;
  return NULL;
}

ssize_t cf_stream_read_until(cf_stream *s, const void *delim, size_t dlen,
                             void *buf, size_t cap, int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if (delim == NULL || dlen == 0 || buf == NULL || cap < dlen ||
      timeout_ns < 0) /* (a cap below dlen could never hold a match) */
    return CF_EINVAL;
  if (s->busy_r)
    return CF_EBUSY;
  s->busy_r = true;
  int64_t deadline = cf_deadline_after(timeout_ns);
  size_t scanned = 0; /* bytes already searched, minus a partial match */
  ssize_t result;
  for (;;) {
    size_t limit = s->in_len < cap ? s->in_len : cap;
    const char *hit = find(s->in + scanned, limit - scanned, delim, dlen);
    if (hit != NULL) {
      size_t n = (size_t)(hit - s->in) + dlen;
      memcpy(buf, s->in, n);
      consume(s, n);
      result = (ssize_t)n;
      break;
    }
    if (limit >= cap) {
      result = CF_ENOBUFS; /* buffered, not consumed */
      break;
    }
    scanned = limit >= dlen ? limit - dlen + 1 : 0;
    if (s->eof || s->rerr != 0) {
      result = s->rerr != 0 ? s->rerr : CF_EEOF;
      break;
    }
    /* More is needed: wait for it even though something is buffered. */
    size_t before = s->in_len;
    while (s->in_len == before && !s->eof && s->rerr == 0) {
      if (s->closed) { /* by another task, while this one waited */
        result = CF_EBADF;
        goto out;
      }
      if (s->in_len >= IN_MAX) { /* the buffer is full below cap */
        result = CF_ENOBUFS;
        goto out;
      }
      rc = start_reading(s);
      if (rc == 0)
        rc = wait_slot(&s->rwait, deadline);
      if (rc != 0) {
        result = rc;
        goto out;
      }
    }
  }
out:
  end_call(s, &s->busy_r);
  return result;
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                */

typedef struct wreq {
  uv_write_t req;
  cf_stream *s;
  size_t len;
  char data[];
} wreq;

static void on_written(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  cf_stream *s = w->s;
  s->queued -= w->len;
  if (status < 0 && s->werr == 0)
    s->werr = status;
  free(w);
  if (s->wwait != NULL && (s->queued <= s->wlimit || s->werr != 0))
    wake_slot(&s->wwait);
}

/* Waits until at most `limit` bytes are queued. */
static int wait_queue(cf_stream *s, size_t limit, int64_t deadline) {
  while (s->queued > limit && s->werr == 0) {
    if (s->closed) /* by another task, while this one waited */
      return CF_EBADF;
    s->wlimit = limit;
    int rc = wait_slot(&s->wwait, deadline);
    if (rc != 0)
      return rc;
  }
  return s->closed ? CF_EBADF : s->werr;
}

int cf_stream_write(cf_stream *s, const void *buf, size_t len,
                    int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if ((buf == NULL && len > 0) || timeout_ns < 0)
    return CF_EINVAL;
  if (s->werr != 0)
    return s->werr;
  if (len == 0)
    return 0;
  if (s->busy_w)
    return CF_EBUSY;
  s->busy_w = true;
  rc = wait_queue(s, HWM, cf_deadline_after(timeout_ns));
  const char *p = buf;
  if (rc == 0 && s->queued == 0) { /* nothing ahead: try the kernel now */
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)(len > UINT32_MAX ? UINT32_MAX : len));
    int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n != UV_EAGAIN && n < 0) {
      rc = s->werr = n;
    }
  }
  while (rc == 0 && len > 0) {
    size_t k = len > (size_t)UINT32_MAX ? (size_t)UINT32_MAX : len;
    wreq *w = cf__malloc(sizeof *w + k);
    if (w == NULL) {
      rc = CF_ENOMEM;
      break;
    }
    memcpy(w->data, p, k);
    w->s = s;
    w->len = k;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)k);
    rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_written);
    if (rc != 0) {
      free(w);
      break;
    }
    s->queued += k;
    p += k;
    len -= k;
  }
  end_call(s, &s->busy_w);
  return rc;
}

int cf_stream_drain(cf_stream *s, int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if (timeout_ns < 0)
    return CF_EINVAL;
  if (s->busy_w) /* the writer's wait is the one slot */
    return CF_EBUSY;
  s->busy_w = true;
  rc = wait_queue(s, 0, cf_deadline_after(timeout_ns));
  end_call(s, &s->busy_w);
  return rc;
}

/* A libuv request whose completion settles a future (connect,
 * shutdown): the status becomes the future's outcome. The request frees
 * itself in its callback; the waiter holds its own reference. */
typedef struct freq {
  union {
    uv_req_t any;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
  } u;
  cf_future *done;
} freq;

static void freq_finish(freq *r, int status) {
  if (status < 0)
    cf_future_set_error(r->done, status, NULL);
  else
    cf_future_set_result(r->done, NULL);
  cf_future_unref(r->done);
  free(r);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  freq_finish((freq *)(void *)req, status);
}

static void on_connected(uv_connect_t *req, int status) {
  freq_finish((freq *)(void *)req, status);
}

/* A new request and the waiter's reference to its future (*f). */
static freq *freq_new(cf_future **f) {
  freq *r = cf__calloc(1, sizeof *r);
  if (r == NULL || cf_future_new(&r->done) != 0) {
    free(r);
    return NULL;
  }
  *f = cf_future_ref(r->done);
  return r;
}

/* After starting r (start_rc: what the libuv call returned), waits for it
 * until the deadline and returns its status (or the wait's code). */
static int freq_await(freq *r, cf_future *f, int start_rc, int64_t deadline) {
  int rc = start_rc;
  if (rc != 0) { /* never started: no callback will come */
    cf_future_unref(r->done);
    free(r);
  } else {
    rc = cf_future_wait_until(f, deadline);
    if (rc == 0)
      rc = cf_future_get_error(f).code; /* the request's own status */
  }
  cf_future_unref(f);
  return rc;
}

int cf_stream_shutdown(cf_stream *s, int64_t timeout_ns) {
  int rc = check_stream(s);
  if (rc != 0)
    return rc;
  if (timeout_ns < 0)
    return CF_EINVAL;
  if (s->busy_w) /* a writer's call is under way */
    return CF_EBUSY;
  cf_future *f;
  freq *r = freq_new(&f);
  if (r == NULL)
    return CF_ENOMEM;
  /* Held as a write call is, so that a close meanwhile leaves the stream
   * to this call (it returns CF_EBADF, as a write would). */
  s->busy_w = true;
  /* The shutdown completes after the queued writes; its status is the
   * first write error if one failed. */
  rc = freq_await(r, f,
                  uv_shutdown(&r->u.shutdown, (uv_stream_t *)&s->tcp,
                              on_shutdown),
                  cf_deadline_after(timeout_ns));
  if (s->closed)
    rc = CF_EBADF;
  else if (rc == 0 && s->werr != 0)
    rc = s->werr;
  end_call(s, &s->busy_w);
  return rc;
}

static void on_stream_closed(uv_handle_t *h) {
  cf_stream *s = h->data;
  s->gone = true;
  stream_release(s);
}

void cf_stream_close(cf_stream *s) {
  if (s == NULL || s->closed)
    return;
  s->closed = true;
  wake_slot(&s->rwait);
  wake_slot(&s->wwait);
  uv_close((uv_handle_t *)&s->tcp, on_stream_closed);
}

static int format_addr(const struct sockaddr_storage *ss, char *buf,
                       size_t size) {
  char ip[64];
  int port;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    int n = snprintf(buf, size, "[%s]:%d", ip, port);
    return n < 0 ? CF_EINVAL : (size_t)n >= size ? CF_ENOBUFS : 0;
  }
  const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
  uv_ip4_name(a, ip, sizeof ip);
  port = ntohs(a->sin_port);
  int n = snprintf(buf, size, "%s:%d", ip, port);
  return n < 0 ? CF_EINVAL : (size_t)n >= size ? CF_ENOBUFS : 0; /* cut */
}

int cf_stream_get_peer(const cf_stream *s, char *buf, size_t size) {
  if (s == NULL || buf == NULL || size == 0)
    return CF_EINVAL;
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int rc = uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len);
  if (rc != 0)
    return rc;
  return format_addr(&ss, buf, size);
}

static cf_stream *stream_new(cf_loop *L) {
  cf_stream *s = cf__calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  if (uv_tcp_init(cf__loop_uv(L), &s->tcp) != 0) {
    free(s);
    return NULL;
  }
  s->tcp.data = s;
  s->loop = L;
  uv_tcp_nodelay(&s->tcp, 1);
  return s;
}

/* ---------------------------------------------------------------------- */
/* Connecting                                                             */

typedef struct resolve {
  uv_getaddrinfo_t req;
  cf_future *done;
  int status;
  struct addrinfo *res;
  bool abandoned; /* the task gave up: free the result in the callback */
} resolve;

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  resolve *r = req->data;
  r->status = status;
  r->res = res;
  if (r->abandoned) {
    uv_freeaddrinfo(res);
    cf_future_unref(r->done);
    free(r);
    return;
  }
  cf_future_set_result(r->done, NULL);
}

/* An IPv4 or IPv6 address literal ("127.0.0.1", "::1", "fe80::1%eth0")
 * into *ss with port (the rest of *ss zeroed); -1 if host is not one. */
static int parse_literal(const char *host, int port,
                         struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -1;
}

/* One attempt to connect a new stream to addr before the deadline: 0 and
 * the stream in *out, or the error (the stream closed). */
static int connect_one(cf_loop *L, const struct sockaddr *addr,
                       int64_t deadline, cf_stream **out) {
  cf_stream *s = stream_new(L);
  if (s == NULL)
    return CF_ENOMEM;
  cf_future *f;
  freq *r = freq_new(&f);
  int rc = r == NULL ? CF_ENOMEM
                     : freq_await(r, f,
                                  uv_tcp_connect(&r->u.connect, &s->tcp, addr,
                                                 on_connected),
                                  deadline);
  if (rc == 0)
    *out = s;
  else
    cf_stream_close(s);
  return rc;
}

/* libuv's getaddrinfo codes (UV_EAI_*, -3000 .. -3014) share their
 * numbers with the library's own (cf/error.h): CF_ERESOLVE for a failed
 * lookup, CF_ENOMEM and CF_ECANCELED for those two; others unchanged. */
int cf__resolve_error(int uv) {
  switch (uv) {
  case UV_EAI_MEMORY:
    return CF_ENOMEM;
  case UV_EAI_CANCELED:
    return CF_ECANCELED;
  case UV_EAI_ADDRFAMILY:
  case UV_EAI_AGAIN:
  case UV_EAI_BADFLAGS:
  case UV_EAI_BADHINTS:
  case UV_EAI_FAIL:
  case UV_EAI_FAMILY:
  case UV_EAI_NODATA:
  case UV_EAI_NONAME:
  case UV_EAI_OVERFLOW:
  case UV_EAI_PROTOCOL:
  case UV_EAI_SERVICE:
  case UV_EAI_SOCKTYPE:
    return CF_ERESOLVE;
  default:
    return uv;
  }
}

static int resolve_host(cf_loop *L, const char *host, int port, int flags,
                        int64_t deadline, struct addrinfo **res_out) {
  int rc;
  resolve *r = cf__calloc(1, sizeof *r);
  if (r == NULL || cf_future_new(&r->done) != 0) {
    free(r);
    return CF_ENOMEM;
  }
  r->req.data = r;
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  rc = uv_getaddrinfo(cf__loop_uv(L), &r->req, on_resolved, host, service,
                      &hints);
  if (rc != 0) {
    cf_future_unref(r->done);
    free(r);
    return cf__resolve_error(rc);
  }
  rc = cf_future_wait_until(r->done, deadline);
  if (rc != 0 && !cf_future_done(r->done)) {
    /* The lookup goes on in libuv's pool: its callback cleans up (both
     * run on this loop's thread). */
    r->abandoned = true;
    uv_cancel((uv_req_t *)&r->req);
    return rc;
  }
  if (rc != 0) { /* cancelled or timed out after the lookup ended */
    if (r->res != NULL)
      uv_freeaddrinfo(r->res);
    cf_future_unref(r->done);
    free(r);
    return rc;
  }
  *res_out = r->res;
  int status = cf__resolve_error(r->status);
  cf_future_unref(r->done);
  free(r);
  return status;
}

int cf_tcp_connect(const char *host, int port, int64_t timeout_ns,
                   cf_stream **out) {
  if (out != NULL)
    *out = NULL;
  if (host == NULL || out == NULL || port <= 0 || port > 65535 ||
      timeout_ns < 0)
    return CF_EINVAL;
  int rc = need_task();
  if (rc != 0)
    return rc;
  cf_loop *L = cf_loop_current();
  int64_t deadline = cf_deadline_after(timeout_ns);
  /* An address literal needs no lookup: connected at once, without the
   * round trip through libuv's thread pool (its four threads would bound
   * how fast many connections start, as asyncio's _ipaddr_info avoids). */
  struct sockaddr_storage ss;
  if (parse_literal(host, port, &ss) == 0)
    return connect_one(L, (const struct sockaddr *)&ss, deadline, out);
  struct addrinfo *res = NULL;
  if ((rc = resolve_host(L, host, port, 0, deadline, &res)) != 0)
    return rc;
  rc = CF_EINVAL;
  for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
    rc = connect_one(L, a->ai_addr, deadline, out);
    if (rc == 0 || rc == CF_ENOMEM || rc == CF_ETIMEDOUT ||
        rc == CF_ECANCELED)
      break;
  }
  uv_freeaddrinfo(res);
  return rc;
}
/* ---------------------------------------------------------------------- */
/* Servers                                                                */

typedef struct conn {
  struct conn *prev, *next;
  cf_server *srv;
  cf_stream *s;
  cf_future *task;
} conn;

struct cf_server {
  uv_tcp_t tcp;
  cf_loop *loop;
  cf_conn_fn fn;
  void *arg;
  int port;
  uint64_t accepted, refused;
  conn *conns; /* connection tasks not ended */
  size_t live;
  cf_future *idle; /* completed when live reaches 0 during a stop */
  bool stopping;   /* no new connections */
  bool cancelling; /* the grace ran out: handlers not started are skipped */
  bool closed, free_on_close; /* the listener's close, and who frees */
};

static void conn_unlink(cf_server *srv, conn *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
}

/* The task of one connection: the handler, then the server's epilogue
 * (the last thing that touches the server for this connection). */
static int conn_main(void *arg, cf_value *result) {
  (void)result;
  conn *c = arg;
  cf_server *srv = c->srv;
  int rc = srv->cancelling ? CF_ECANCELED : srv->fn(c->s, srv->arg);
  /* The handler may have closed it (then it is kept until now, pinned);
   * the server closes it otherwise. */
  cf_stream *s = c->s;
  s->pinned = false;
  if (s->closed)
    stream_release(s);
  else
    cf_stream_close(s);
  conn_unlink(srv, c);
  if (c->task != NULL)
    cf_future_unref(c->task);
  free(c);
  if (--srv->live == 0 && srv->idle != NULL)
    cf_future_set_result(srv->idle, NULL);
  return rc;
}

static void on_connection(uv_stream_t *listener, int status) {
  cf_server *srv = listener->data;
  if (status < 0 || srv->stopping) {
    srv->refused++; /* EMFILE and friends: libuv drops that connection */
    return;
  }
  cf_stream *s = stream_new(srv->loop);
  conn *c = s != NULL ? cf__calloc(1, sizeof *c) : NULL;
  if (c == NULL || uv_accept(listener, (uv_stream_t *)&s->tcp) != 0) {
    srv->refused++;
    if (s != NULL)
      cf_stream_close(s);
    free(c);
    return;
  }
  c->srv = srv;
  c->s = s;
  c->next = srv->conns;
  if (srv->conns != NULL)
    srv->conns->prev = c;
  srv->conns = c;
  srv->live++;
  if (cf_loop_spawn(srv->loop, conn_main, c, &c->task) != 0) {
    conn_unlink(srv, c);
    srv->live--;
    srv->refused++;
    cf_stream_close(s);
    free(c);
    return;
  }
  s->pinned = true; /* until conn_main ends, whoever closes it */
  srv->accepted++;
}

/* The listener is closed: free the server now if its stop has returned,
 * else the stop does. */
static void on_server_closed(uv_handle_t *h) {
  cf_server *srv = h->data;
  srv->closed = true;
  if (srv->free_on_close)
    free(srv);
}

/* How long cf_server_start waits for the name it binds to resolve. */
#define BIND_RESOLVE_NS CF_SEC(30)

static int parse_bind_addr(const char *host, int port,
                           struct sockaddr_storage *ss) {
  if (host == NULL)
    host = "::";
  if (parse_literal(host, port, ss) == 0)
    return 0;
  if (strcmp(host, "localhost") == 0)
    return uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)ss);
  /* A name: resolved off the loop (as for connect), its first address. */
  struct addrinfo *res = NULL;
  int rc = resolve_host(cf_loop_current(), host, port, AI_PASSIVE,
                        cf_deadline_after(BIND_RESOLVE_NS), &res);
  if (rc == 0 && res != NULL && res->ai_addrlen <= sizeof *ss)
    memcpy(ss, res->ai_addr, res->ai_addrlen);
  else if (rc == 0)
    rc = CF_EINVAL;
  if (res != NULL)
    uv_freeaddrinfo(res);
  return rc;
}

int cf_server_start(const char *host, int port, int backlog, cf_conn_fn fn,
                    void *arg, cf_server **out) {
  if (out != NULL)
    *out = NULL;
  if (fn == NULL || out == NULL || port < 0 || port > 65535 || backlog < 0)
    return CF_EINVAL;
  int rc = need_task();
  if (rc != 0)
    return rc;
  struct sockaddr_storage ss;
  if ((rc = parse_bind_addr(host, port, &ss)) != 0)
    return rc;
  cf_server *srv = cf__calloc(1, sizeof *srv);
  if (srv == NULL)
    return CF_ENOMEM;
  srv->loop = cf_loop_current();
  srv->fn = fn;
  srv->arg = arg;
  rc = uv_tcp_init(cf__loop_uv(srv->loop), &srv->tcp);
  if (rc != 0) {
    free(srv);
    return rc;
  }
  srv->tcp.data = srv;
  rc = uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->tcp, backlog != 0 ? backlog : 511,
                   on_connection);
  if (rc != 0) {
    srv->free_on_close = true; /* freed by the close's callback */
    uv_close((uv_handle_t *)&srv->tcp, on_server_closed);
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&bound, &len);
  srv->port = bound.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                  : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  *out = srv;
  return 0;
}

int cf_server_get_port(const cf_server *srv) {
  return srv != NULL ? srv->port : CF_EINVAL;
}

uint64_t cf_server_get_accepted(const cf_server *srv) {
  return srv != NULL ? srv->accepted : 0;
}

uint64_t cf_server_get_refused(const cf_server *srv) {
  return srv != NULL ? srv->refused : 0;
}


/* Waits until no connection task is left, or the deadline. */
static int wait_idle(cf_server *srv, int64_t deadline) {
  while (srv->live > 0) {
    if (srv->idle == NULL && cf_future_new(&srv->idle) != 0)
      return CF_ENOMEM;
    int rc = cf_future_wait_until(srv->idle, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int cf_server_stop(cf_server *srv, int64_t grace_ns) {
  if (srv == NULL || grace_ns < 0)
    return CF_EINVAL;
  int rc = need_task();
  if (rc != 0)
    return rc;
  srv->stopping = true;
  uv_close((uv_handle_t *)&srv->tcp, on_server_closed); /* no new ones */
  rc = wait_idle(srv, cf_deadline_after(grace_ns));
  int result = 0;
  if (rc != 0) {
    result = CF_ETIMEDOUT;
    /* Running handlers get a cancellation; those not started yet are
     * skipped when they start (their epilogue must still run). */
    srv->cancelling = true;
    for (conn *c = srv->conns; c != NULL; c = c->next)
      if (c->task != NULL && cf_future_running(c->task))
        cf_future_cancel(c->task);
    /* Cancelled tasks end soon; a handler that suppresses its
     * cancellation delays this (its job). A cancellation of this task
     * meanwhile is delivered once: wait on regardless. */
    while (srv->live > 0)
      wait_idle(srv, CF_FOREVER);
  }
  if (srv->idle != NULL)
    cf_future_unref(srv->idle);
  srv->idle = NULL;
  if (srv->closed)
    free(srv);
  else
    srv->free_on_close = true;
  return result;
}
