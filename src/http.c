/*
 * HTTP GET on libcurl (cf/http.h): a blocking client around one reused
 * easy handle, and a loop client that drives curl's multi-socket API from
 * the loop: curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION,
 * mapped onto cf_fd_watch) and when to call it back (CURLMOPT_TIMERFUNCTION,
 * mapped onto one loop call); we tell curl what became ready
 * (curl_multi_socket_action) and collect finished transfers.
 *
 * Everything curl writes while a task waits lands in a heap record (the
 * waiting task's stack may be saved away, with the loop's shared-stack
 * option), and is moved into the caller's response once it resumes.
 */
#include "cf/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf/future.h"
#include "cf/io.h"
#include "cf/loop.h"

enum { MODE_BLOCKING, MODE_LOOP };
#define DEFAULT_TIMEOUT_NS ((int64_t)30 * 1000000000)
#define DEFAULT_MAX_BODY ((size_t)64 << 20)

typedef struct sock_watch {
  struct sock_watch *next, *prev;
  struct cf_http_client *c;
  cf_fd_watch *w;
  curl_socket_t fd;
} sock_watch;

struct cf_http_client {
  int mode;
  /* blocking */
  CURL *easy;
  atomic_int busy;
  /* loop */
  cf_loop *loop;
  CURLM *multi;
  cf_loop_call *timer;
  sock_watch *socks;
  size_t inflight;
  _Atomic uint64_t connects;
  /* Transfers curl reported done in one call, settled after all its
   * messages are read (see socket_action). */
  struct ended {
    CURL *easy;
    CURLcode code;
  } *ended;
  size_t ended_cap;
  struct curl_slist *close_hdr; /* "Connection: close", for the burst */
};

/* One transfer's state, on the heap. */
typedef struct xfer {
  CURL *easy;
  cf_future *done; /* loop mode: completed when curl reports the end */
  const cf_http_opts *opts; /* &opts_copy, or NULL */
  cf_http_opts opts_copy;   /* the caller's may be on a saved task stack */
  size_t max_body;
  char *body;
  size_t len, cap;
  bool too_big;
  char reason[64];
  char errbuf[CURL_ERROR_SIZE];
  CURLcode code;
} xfer;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---------------------------------------------------------------------- */
/* One transfer: options, callbacks, outcome                              */

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  xfer *x = arg;
  size_t k = size * n;
  if (k > x->max_body - x->len) {
    x->too_big = true;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if (x->len + k + 1 > x->cap) {
    /* First: room for the announced length (most bodies arrive whole);
     * then double. 10,000 small responses at once keep 10,000 bodies. */
    size_t cap = x->cap * 2;
    curl_off_t cl = -1;
    if (x->cap == 0 &&
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) ==
            CURLE_OK &&
        cl > 0 && (uint64_t)cl < x->max_body)
      cap = (size_t)cl + 1;
    if (cap < 256)
      cap = 256;
    while (cap < x->len + k + 1)
      cap *= 2;
    char *nb = realloc(x->body, cap);
    if (nb == NULL)
      return 0;
    x->body = nb;
    x->cap = cap;
  }
  memcpy(x->body + x->len, p, k);
  x->len += k;
  x->body[x->len] = '\0';
  return k;
}

/* Keeps the reason phrase of the last status line ("HTTP/1.1 404 Not
 * Found"); a redirect's body is discarded by curl, ours is reset here. */
static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  xfer *x = arg;
  size_t k = size * n;
  if (k > 5 && memcmp(p, "HTTP/", 5) == 0) {
    x->len = 0;
    x->reason[0] = '\0';
    const char *e = p + k, *s = memchr(p, ' ', k);
    if (s != NULL && (s = memchr(s + 1, ' ', (size_t)(e - s - 1))) != NULL) {
      s++;
      size_t m = 0;
      while (s + m < e && s[m] != '\r' && s[m] != '\n' &&
             m + 1 < sizeof x->reason)
        m++;
      memcpy(x->reason, s, m);
      x->reason[m] = '\0';
    }
  }
  return k;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  (void)dt, (void)dn, (void)ut, (void)un;
  xfer *x = arg;
  return x->opts != NULL && x->opts->abort != NULL &&
         x->opts->abort(x->opts->abort_arg) != 0;
}

/* The request's bound in ms for curl: 0 (none) for CF_FOREVER or beyond
 * what a long holds. */
static long timeout_ms(const cf_http_opts *o) {
  int64_t t = o && o->timeout_ns > 0 ? o->timeout_ns : DEFAULT_TIMEOUT_NS;
  if (t >= (int64_t)1 << 50) /* ~13 days; CF_FOREVER */
    return 0;
  return (long)((t + 999999) / 1000000);
}

static void setup(xfer *x, const char *url, const cf_http_opts *o) {
  CURL *e = x->easy;
  long ms = timeout_ms(o);
  if (o != NULL) {
    x->opts_copy = *o;
    x->opts = &x->opts_copy;
  }
  x->max_body = o && o->max_body ? o->max_body : DEFAULT_MAX_BODY;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, o && o->no_redirects ? 0L : 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, "cfutures-http/0.1");
  /* HTTP/1.1, as the seeds' httpx speaks by default: its status line
   * carries the reason phrase the programs print ("HTTP error 403 -
   * Forbidden"); libcurl would negotiate HTTP/2 over TLS, which has none. */
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_NOBODY, o && o->head ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  if (o != NULL && o->abort != NULL) {
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
  }
}

/* Moves the outcome into resp and returns the code (see cf/http.h). */
static int finish(cf_http_client *c, xfer *x, cf_http_response *resp) {
  CURL *e = x->easy;
  long status = 0, conns = 0, oserr = 0;
  char *eff = NULL;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &conns);
  curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
  curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &oserr);
  atomic_fetch_add(&c->connects, (uint64_t)(conns > 0 ? conns : 0));
  resp->status = status;
  snprintf(resp->reason, sizeof resp->reason, "%s", x->reason);
  resp->url = eff != NULL ? strdup(eff) : NULL;
  resp->body = x->body;
  resp->body_len = x->len;
  x->body = NULL;
  const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->code);
  int rc;
  switch (x->code) {
  case CURLE_OK:
    if (status >= 200 && status < 300)
      return 0;
    snprintf(resp->error, sizeof resp->error, "HTTP error %ld - %s", status,
             resp->reason[0] ? resp->reason : "(no reason)");
    return CF_EHTTPSTATUS;
  case CURLE_OPERATION_TIMEDOUT:
    rc = CF_ETIMEDOUT;
    break;
  case CURLE_ABORTED_BY_CALLBACK:
    rc = CF_ECANCELED;
    detail = "request aborted";
    break;
  case CURLE_OUT_OF_MEMORY:
    rc = CF_ENOMEM;
    break;
  case CURLE_WRITE_ERROR:
    if (x->too_big) {
      rc = CF_ENOBUFS;
      detail = "response body larger than max_body";
      break;
    }
    rc = CF_ENOMEM; /* our buffer could not grow */
    break;
  case CURLE_COULDNT_CONNECT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
    /* The system's reason (a reused handle may keep an older errno for
     * other failures, so only these take it). */
    rc = oserr > 0 ? -(int)oserr : CF_EREQUEST;
    break;
  default:
    rc = CF_EREQUEST;
    break;
  }
  snprintf(resp->error, sizeof resp->error, "%s", detail);
  return rc;
}

static void xfer_free(xfer *x) {
  if (x == NULL)
    return;
  if (x->done != NULL)
    cf_future_unref(x->done);
  free(x->body);
  free(x);
}

/* ---------------------------------------------------------------------- */
/* Loop mode: curl's sockets and timer on the loop                        */

static void socket_action(cf_http_client *c, curl_socket_t fd, int flags);

static void on_timer(void *arg) {
  cf_http_client *c = arg;
  cf_loop_call_release(c->timer);
  c->timer = NULL;
  socket_action(c, CURL_SOCKET_TIMEOUT, 0);
}

static void timer_cancel(cf_http_client *c) {
  if (c->timer != NULL) {
    cf_loop_call_cancel(c->timer);
    cf_loop_call_release(c->timer);
    c->timer = NULL;
  }
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *arg) {
  (void)m;
  cf_http_client *c = arg;
  timer_cancel(c);
  if (timeout_ms < 0)
    return 0;
  int rc = cf_loop_call_later(c->loop, (int64_t)timeout_ms * 1000000, on_timer,
                              c, &c->timer);
  return rc == 0 ? 0 : -1;
}

static void on_sock_ready(void *arg, int fd, int revents) {
  sock_watch *s = arg;
  int flags = 0;
  if (revents < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (revents & CF_READABLE)
      flags |= CURL_CSELECT_IN;
    if (revents & CF_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  socket_action(s->c, fd, flags); /* may free s */
}

static void sock_unlink_free(sock_watch *s) {
  cf_http_client *c = s->c;
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    c->socks = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  cf_fd_watch_free(s->w);
  free(s);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *arg,
                          void *sockp) {
  (void)e;
  cf_http_client *c = arg;
  sock_watch *s = sockp;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      curl_multi_assign(c->multi, fd, NULL);
      sock_unlink_free(s);
    }
    return 0;
  }
  unsigned ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    ev |= CF_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    ev |= CF_WRITABLE;
  if (s != NULL)
    return cf_fd_watch_update(s->w, ev) == 0 ? 0 : -1;
  s = calloc(1, sizeof *s);
  if (s == NULL)
    return -1;
  s->c = c;
  s->fd = fd;
  if (cf_fd_watch_start(c->loop, fd, ev, on_sock_ready, s, &s->w) != 0) {
    free(s);
    return -1;
  }
  s->next = c->socks;
  if (c->socks != NULL)
    c->socks->prev = s;
  c->socks = s;
  curl_multi_assign(c->multi, fd, s);
  return 0;
}

/* Hands readiness to curl, then settles every transfer that ended. All
 * of curl's messages are read before any handle is removed: curl 7.88's
 * curl_multi_remove_handle walks the messages still queued, so removing
 * each one as it is read costs O(n^2) when thousands of transfers end in
 * one call (10,000 downloads with one delay end together). */
static void socket_action(cf_http_client *c, curl_socket_t fd, int flags) {
  int running = 0;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  CURLMsg *m;
  int left;
  for (;;) {
    size_t n = 0;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
      if (m->msg != CURLMSG_DONE)
        continue;
      if (n == c->ended_cap) {
        size_t cap = c->ended_cap != 0 ? 2 * c->ended_cap : 64;
        struct ended *e = realloc(c->ended, cap * sizeof *e);
        if (e == NULL) {
          /* Settle what is collected; this one is removed at once. */
          xfer *x = NULL;
          curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
          CURLcode code = m->data.result;
          curl_multi_remove_handle(c->multi, m->easy_handle);
          if (x != NULL) {
            x->code = code;
            cf_value v = CF_VALUE_INIT;
            cf_future_set_result(x->done, &v);
          }
          break;
        }
        c->ended = e;
        c->ended_cap = cap;
      }
      c->ended[n].easy = m->easy_handle;
      c->ended[n].code = m->data.result;
      n++;
    }
    for (size_t i = 0; i < n; i++) {
      xfer *x = NULL;
      curl_easy_getinfo(c->ended[i].easy, CURLINFO_PRIVATE, (char **)&x);
      curl_multi_remove_handle(c->multi, c->ended[i].easy);
      if (x != NULL) {
        x->code = c->ended[i].code;
        cf_value v = CF_VALUE_INIT;
        cf_future_set_result(x->done, &v); /* wakes the waiting task */
      }
    }
    if (m == NULL)
      break; /* every message read (else: out of memory, read on) */
  }
}

/* Past this many requests in flight on a loop client, a new request opens
 * a connection of its own instead of asking curl's cache for an idle one:
 * curl searches the connections to a host one by one, and with 10,000 of
 * them busy that search costs more than a connect (bench/NOTES.md). */
#define FRESH_ABOVE 1024

static int loop_get(cf_http_client *c, xfer *x, cf_http_response *resp) {
  if (cf_future_new(&x->done) != 0)
    return CF_ENOMEM;
  if (c->inflight >= FRESH_ABOVE) {
    /* And closes it when done: kept, the burst's connections would fill
     * curl's cache, which curl 7.88 walks whole in every
     * curl_multi_remove_handle of a transfer that kept its connection. */
    curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(x->easy, CURLOPT_FORBID_REUSE, 1L);
    if (c->close_hdr == NULL)
      c->close_hdr = curl_slist_append(NULL, "Connection: close");
    if (c->close_hdr != NULL)
      curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, c->close_hdr);
  }
  if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK)
    return CF_ENOMEM;
  c->inflight++;
  /* curl's own timer ends the request at its timeout; this wait's
   * deadline, a few seconds later, is the backstop should curl never be
   * called again (a loop call or a watch that could not be made). */
  long ms = timeout_ms(x->opts);
  int rc = cf_future_wait(x->done, ms == 0 ? CF_FOREVER
                                           : CF_MSEC(ms) + CF_SEC(5));
  c->inflight--;
  if (rc != 0) { /* cancelled with its task, or curl went silent */
    if (!cf_future_done(x->done)) /* curl still has it: take it back */
      curl_multi_remove_handle(c->multi, x->easy);
    snprintf(resp->error, sizeof resp->error, "%s",
             rc == CF_ETIMEDOUT ? "request timed out (no word from curl)"
                                : "request cancelled");
    return rc;
  }
  return finish(c, x, resp);
}

/* ---------------------------------------------------------------------- */
/* Public API                                                             */

int cf_http_client_new(unsigned flags, cf_http_client **out) {
  if (out != NULL)
    *out = NULL;
  if (out == NULL || (flags & ~(unsigned)CF_HTTP_CLIENT_BLOCKING) != 0)
    return CF_EINVAL;
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK)
    return CF_ENOMEM;
  cf_http_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CF_ENOMEM;
  cf_loop *loop = cf_loop_current();
  if (!(flags & CF_HTTP_CLIENT_BLOCKING) && loop != NULL &&
      cf_task_current() != NULL) {
    c->mode = MODE_LOOP;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
      free(c);
      return CF_ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  } else {
    c->mode = MODE_BLOCKING;
    c->easy = curl_easy_init();
    if (c->easy == NULL) {
      free(c);
      return CF_ENOMEM;
    }
  }
  *out = c;
  return 0;
}

int cf_http_client_free(cf_http_client *c) {
  if (c == NULL)
    return 0;
  if (c->mode == MODE_BLOCKING) {
    int expect = 0;
    if (!atomic_compare_exchange_strong(&c->busy, &expect, 1))
      return CF_EBUSY;
    curl_easy_cleanup(c->easy);
    free(c);
    return 0;
  }
  if (cf_loop_current() != c->loop)
    return CF_EWRONGTHREAD;
  if (c->inflight != 0)
    return CF_EBUSY;
  curl_multi_cleanup(c->multi); /* closes the kept-alive connections */
  while (c->socks != NULL)      /* any curl did not remove itself */
    sock_unlink_free(c->socks);
  timer_cancel(c);
  curl_slist_free_all(c->close_hdr);
  free(c->ended);
  free(c);
  return 0;
}

void cf_http_response_release(cf_http_response *resp) {
  if (resp == NULL)
    return;
  free(resp->body);
  free(resp->url);
  memset(resp, 0, sizeof *resp);
}

uint64_t cf_http_client_get_connects(const cf_http_client *c) {
  return c == NULL ? 0 : atomic_load(&c->connects);
}

int cf_http_get(cf_http_client *c, const char *url, const cf_http_opts *opts,
                cf_http_response *resp) {
  if (c == NULL || url == NULL || resp == NULL)
    return CF_EINVAL;
  cf_http_response_release(resp);
  if (opts != NULL && opts->timeout_ns < 0) { /* cf/time.h: invalid */
    snprintf(resp->error, sizeof resp->error, "a negative timeout");
    return CF_EINVAL;
  }
  if (c->mode == MODE_LOOP &&
      (cf_loop_current() != c->loop || cf_task_current() == NULL)) {
    snprintf(resp->error, sizeof resp->error,
             "a loop client serves the tasks of its own loop");
    return CF_EWRONGTHREAD;
  }
  xfer *x = calloc(1, sizeof *x);
  if (x == NULL)
    return CF_ENOMEM;
  int rc;
  if (c->mode == MODE_BLOCKING) {
    int expect = 0;
    if (!atomic_compare_exchange_strong(&c->busy, &expect, 1)) {
      free(x);
      snprintf(resp->error, sizeof resp->error,
               "a blocking client serves one thread at a time");
      return CF_EBUSY;
    }
    x->easy = c->easy;
    curl_easy_reset(x->easy); /* keeps the connections and caches */
    setup(x, url, opts);
    x->code = curl_easy_perform(x->easy);
    rc = finish(c, x, resp);
    /* The handle stays with the client: nothing of x (its error buffer,
     * the callbacks' data) may stay set in it once x is freed. */
    curl_easy_reset(x->easy);
    atomic_store(&c->busy, 0);
  } else {
    x->easy = curl_easy_init();
    if (x->easy == NULL) {
      free(x);
      return CF_ENOMEM;
    }
    setup(x, url, opts);
    rc = loop_get(c, x, resp);
    curl_easy_cleanup(x->easy);
  }
  if (rc == CF_ENOMEM && resp->error[0] == '\0')
    snprintf(resp->error, sizeof resp->error, "out of memory");
  xfer_free(x);
  return rc;
}
