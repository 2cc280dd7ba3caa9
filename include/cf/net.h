/*
 * cf/net.h - TCP streams for loop tasks (asyncio's open_connection and
 * start_server): connect, read, write with back-pressure, half-close,
 * and a server that runs a task per connection.
 *
 * Every call here is for a task (CF_ENOTTASK elsewhere) and suspends it,
 * never the loop's thread. A stream belongs to the loop of the task that
 * made it (connect, or the server's connection task); use it from tasks of
 * that loop. One task reads a stream at a time, and one writes (a second
 * concurrent reader or writer gets CF_EBUSY; cf_stream_drain and
 * cf_stream_shutdown count as writers). A task may close a stream that
 * another task is reading or writing: that task's call returns CF_EBADF,
 * and must not use the stream again.
 *
 * Errors are -errno from the system or libuv (ECONNREFUSED, ECONNRESET,
 * EPIPE, EMFILE, EADDRINUSE, ...), CF_ETIMEDOUT for a deadline,
 * CF_ECANCELED for a cancelled task, and CF_EEOF / CF_ENOBUFS as below;
 * a stream is never closed behind the caller's back.
 */
#ifndef CF_NET_H
#define CF_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cf/error.h"
#include "cf/loop.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_stream cf_stream;

/**
 * Resolves host (a name or an address, IPv4 or IPv6) without blocking the
 * loop (getaddrinfo runs on libuv's thread pool; an address literal such
 * as "127.0.0.1" or "::1" is used as it is, without a lookup), then
 * connects to the first address that accepts, all within timeout_ns.
 * Returns 0 and the stream in *out, CF_ETIMEDOUT, CF_ECANCELED,
 * -ECONNREFUSED and the like, CF_ERESOLVE (the name lookup failed: an
 * unknown name, no DNS answer), CF_ENOMEM, or CF_EINVAL.
 */
CF_EXTERN int cf_tcp_connect(const char *host, int port, int64_t timeout_ns,
                             cf_stream **out);

/**
 * Reads some bytes (at most len) into buf: what has arrived, waiting for
 * at least one byte. Returns the count (> 0), 0 at end of stream (the
 * peer closed its side), or a negative code. len 0 returns 0 at once,
 * reading and waiting for nothing (not an end of stream).
 */
CF_EXTERN ssize_t cf_stream_read(cf_stream *s, void *buf, size_t len,
                                 int64_t timeout_ns);

/**
 * Reads exactly len bytes (asyncio's readexactly). Returns 0; CF_EEOF if
 * the stream ended first (the bytes that did arrive are lost, as in
 * asyncio's IncompleteReadError, and *got says how many, if non-NULL); or
 * a negative code. The timeout bounds the whole call.
 */
CF_EXTERN int cf_stream_read_exactly(cf_stream *s, void *buf, size_t len,
                                     int64_t timeout_ns, size_t *got);

/**
 * Reads up to and including the first occurrence of delim[0..dlen) into
 * buf (asyncio's readuntil), at most cap bytes. Returns the length read
 * (delimiter included); CF_ENOBUFS if cap bytes arrived without the
 * delimiter (they stay buffered: read them with cf_stream_read); CF_EEOF
 * if the stream ended first (what arrived stays buffered); CF_EINVAL for a
 * cap below dlen (no match could fit); or a negative code.
 */
CF_EXTERN ssize_t cf_stream_read_until(cf_stream *s, const void *delim,
                                       size_t dlen, void *buf, size_t cap,
                                       int64_t timeout_ns);

/**
 * Waits until a read would not wait: bytes are buffered, or the end of
 * the stream or an error has arrived (the next read reports those). Reads
 * nothing. For handlers that want no buffer of their own while idle: on
 * the loop's shared stack a waiting task keeps its frames, a read buffer
 * in them included, so a server of 10,000 idle connections that waits
 * here and reads in a function it calls afterwards keeps no buffer per
 * connection. Returns 0, CF_ETIMEDOUT, CF_ECANCELED, CF_EBUSY (another
 * task is reading), or what a read returns for a bad stream or caller.
 */
CF_EXTERN int cf_stream_wait_readable(cf_stream *s, int64_t timeout_ns);

/**
 * Writes buf[0..len) (copied: the caller may reuse buf at once). Waits
 * while more than the high-water mark (256 KiB) of earlier writes is still
 * queued for the kernel, as asyncio's drain(), so a fast writer cannot
 * buffer without bound. Returns 0 once queued, or a negative code (the
 * first error of an earlier write, such as -EPIPE or -ECONNRESET, is
 * returned by the next write and by cf_stream_drain).
 */
CF_EXTERN int cf_stream_write(cf_stream *s, const void *buf, size_t len,
                              int64_t timeout_ns);

/** Waits until everything written has been handed to the kernel. */
CF_EXTERN int cf_stream_drain(cf_stream *s, int64_t timeout_ns);

/** Half-closes: sends end of stream after what was written (shutdown
 * SHUT_WR); reading goes on. Returns 0, CF_EBUSY (another task is
 * writing), CF_EBADF (the stream was closed, also meanwhile), -ENOTCONN
 * (already half-closed), or another negative code (the first error of an
 * earlier write). */
CF_EXTERN int cf_stream_shutdown(cf_stream *s, int64_t timeout_ns);

/** Closes the stream and frees it (NULL is ignored). Data still queued
 * is dropped; call cf_stream_drain first to keep it. Once: the stream is
 * gone after it (a second close is a use after free, as free's is). */
CF_EXTERN void cf_stream_close(cf_stream *s);

/** The peer's or the local address as text ("127.0.0.1:8000",
 * "[::1]:8000"); 0, CF_ENOBUFS if it does not fit in size bytes (what
 * fits is there, cut; 56 bytes always suffice), or a negative code. */
CF_EXTERN int cf_stream_get_peer(const cf_stream *s, char *buf, size_t size);

typedef struct cf_server cf_server;

/** A connection handler: runs as a task of its own per connection. The
 * stream is the handler's to close (the server closes it if it does
 * not). Its return value is the task's outcome. */
typedef int (*cf_conn_fn)(cf_stream *s, void *arg);

/**
 * Listens on host:port (host: an address literal such as "127.0.0.1",
 * "::1", "0.0.0.0"; "localhost" (127.0.0.1); or a name, resolved off the
 * loop within 30 s, whose first address is used; NULL: "::", all IPv6 and
 * IPv4 addresses; port 0: any free port, see cf_server_get_port) and runs fn(stream, arg) as a task for every
 * connection accepted, on the calling task's loop (Python's start_server).
 * backlog 0: 511. Returns 0 and the server in *out; -EADDRINUSE and other
 * bind/listen errors; CF_ERESOLVE (the name lookup failed) or
 * CF_ETIMEDOUT for a name; CF_ENOTTASK; CF_EINVAL. A connection the server
 * cannot take (EMFILE, ENOMEM) is refused and counted; the server keeps
 * serving the others.
 */
CF_EXTERN int cf_server_start(const char *host, int port, int backlog,
                              cf_conn_fn fn, void *arg, cf_server **out);

/** The port the server listens on (the one chosen for port 0). */
CF_EXTERN int cf_server_get_port(const cf_server *srv);

/** Connections accepted so far, and those refused for lack of
 * descriptors or memory. */
CF_EXTERN uint64_t cf_server_get_accepted(const cf_server *srv);
CF_EXTERN uint64_t cf_server_get_refused(const cf_server *srv);

/**
 * Stops accepting, lets running connection tasks finish for up to
 * grace_ns, cancels the ones still running and waits for them, then frees
 * the server. Returns 0, or CF_ETIMEDOUT if some had to be cancelled.
 * In a task of the server's loop.
 */
CF_EXTERN int cf_server_stop(cf_server *srv, int64_t grace_ns);

#ifdef __cplusplus
}
#endif

#endif /* CF_NET_H */
