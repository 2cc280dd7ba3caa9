/*
 * cf/http.h - HTTP GET on libcurl, for threads and for loop tasks (what
 * the seeds do with httpx/requests and with aiohttp/httpx.AsyncClient).
 *
 * A client is the seeds' session: it keeps connections alive between
 * requests to the same server. It speaks HTTP/1.1, as httpx does by
 * default (over TLS too, where libcurl would negotiate HTTP/2: HTTP/1.1
 * keeps the status line's reason phrase, resp->reason). It has one of
 * two modes, fixed when it is made:
 *
 *   - made in a loop task: a *loop client*. Its GETs suspend the calling
 *     task while curl's multi-socket interface runs the transfer on the
 *     loop (sockets through cf_fd_watch, curl's timer through a loop
 *     call): no thread per request, no polling. Any number of tasks of
 *     that loop may use it at once; tasks of other loops, and threads,
 *     get CF_EWRONGTHREAD. Past 1024 requests in flight, further ones
 *     open connections of their own rather than search curl's cache of
 *     idle ones (a search linear in the connections to the host), and
 *     send "Connection: close" so that the server closes them when it
 *     has answered.
 *   - made anywhere else: a *blocking client* (one curl easy handle,
 *     reused). Its GETs block the calling thread. It serves one thread at
 *     a time (a second concurrent caller gets CF_EBUSY): give each worker
 *     of a pool its own, from the pool's initializer, as the seeds give
 *     each thread its own session.
 *
 * Errors. cf_http_get returns 0 for a response with a 2xx status. The
 * seeds tell HTTPStatusError from RequestError; so does the code:
 *   CF_EHTTPSTATUS   a response came, with another status (resp->status,
 *                    resp->reason and the body are filled);
 *   CF_ETIMEDOUT     the timeout passed (connecting or transferring);
 *   -ECONNREFUSED, -ECONNRESET, ...  the system's reason, when there is one;
 *   CF_EREQUEST      another failure to get a response (resolution,
 *                    protocol, too many redirects);
 *   CF_ECANCELED     the task was cancelled, or opts->abort said stop;
 *   CF_ENOBUFS       the body is larger than opts->max_body;
 *   CF_EINVAL, CF_ENOMEM, CF_EBUSY, CF_EWRONGTHREAD as above.
 * In every case but CF_EINVAL, resp->error holds a printable message
 * ("HTTP error 404 - Not Found", "Failed to connect to localhost port 1
 * after 0 ms: Couldn't connect to server").
 *
 * Link with cfutures_http (it needs libcurl).
 */
#ifndef CF_HTTP_H
#define CF_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_http_client cf_http_client;

/** Options of one request. Zero-initialise; every zero is a default. */
typedef struct cf_http_opts {
  /** Bound on the whole request: connecting, waiting, reading (0: 30 s;
   * CF_FOREVER: none; negative: CF_EINVAL). The seeds use 6.1 s and
   * 3.1 s. */
  int64_t timeout_ns;
  /** Do not follow redirects (by default up to 10 are followed, as
   * follow_redirects=True). */
  bool no_redirects;
  /** Send HEAD instead of GET (no body is read). */
  bool head;
  /** Largest body accepted (0: 64 MiB); a larger one fails with
   * CF_ENOBUFS. */
  size_t max_body;
  /**
   * If non-NULL, called from time to time while the request is under way:
   * a non-zero return aborts it with CF_ECANCELED. For blocking clients it
   * runs on the calling thread, about once a second at least: this is how
   * Ctrl-C reaches a request in flight (set a flag in the handler, return
   * it here). For loop clients it runs on the loop's thread, outside the
   * task, whenever curl is woken (so a silent server is noticed only at
   * the timeout; cancel the task instead), and abort_arg must not point
   * into a task's stack.
   */
  int (*abort)(void *arg);
  void *abort_arg;
} cf_http_opts;

/** A response. Zero-initialise before the first use; release with
 * cf_http_response_release (cf_http_get releases what it held first, so
 * one response can be reused for many requests). */
typedef struct cf_http_response {
  long status;      /**< HTTP status; 0 if no response arrived */
  char reason[64];  /**< reason phrase ("OK", "Not Found"), maybe empty */
  char *body;       /**< the body, NUL-terminated (owned; NULL if empty) */
  size_t body_len;  /**< its length (without the NUL) */
  char *url;        /**< the URL finally fetched, after redirects (owned) */
  char error[256];  /**< a message for any failure, else "" */
} cf_http_response;

/** Flags of cf_http_client_new. */
enum cf_http_client_flags {
  /** Make a blocking client even in a task (its GETs block the loop's
   * thread: for tests and for tasks that mean it). */
  CF_HTTP_CLIENT_BLOCKING = 1u << 0
};

/**
 * Makes a client (see the modes above). Initialises libcurl on first use
 * (curl_global_init, thread-safe since libcurl 7.84). Returns 0 and the
 * client in *out, CF_EINVAL (NULL out, unknown flags), CF_ENOMEM.
 */
CF_EXTERN int cf_http_client_new(unsigned flags, cf_http_client **out);

/**
 * Frees the client and closes its connections (NULL is ignored). A loop
 * client is freed by a task of its loop (elsewhere: CF_EWRONGTHREAD), before
 * the loop ends: its sockets are watched by that loop. A client with a
 * request in flight returns CF_EBUSY and stays. Returns 0, CF_EBUSY,
 * CF_EWRONGTHREAD.
 */
CF_EXTERN int cf_http_client_free(cf_http_client *c);

/**
 * GETs url (http or https) and fills *resp (see Errors above for what
 * comes back). opts may be NULL for the defaults. Blocking client: blocks
 * the calling thread. Loop client: suspends the calling task; cancelling
 * the task aborts the request.
 */
CF_EXTERN int cf_http_get(cf_http_client *c, const char *url,
                          const cf_http_opts *opts, cf_http_response *resp);

/** Frees what resp holds and zeroes it (NULL is ignored). */
CF_EXTERN void cf_http_response_release(cf_http_response *resp);

/** How many connections the client has opened so far (a client that
 * reuses kept-alive connections opens fewer than it makes requests). */
CF_EXTERN uint64_t cf_http_client_get_connects(const cf_http_client *c);

#ifdef __cplusplus
}
#endif

#endif /* CF_HTTP_H */
