/*
 * cf/io.h - file descriptors, signals and descriptor limits on the loop
 * (the first part of async I/O; TCP streams come next, in cf/net.h).
 *
 * Waiting for a descriptor: cf_wait_fd suspends a task until the
 * descriptor is readable or writable (or the deadline passes); anywhere
 * else it blocks the thread in poll(2). For libraries that own their
 * sockets and want callbacks (libcurl's multi-socket API), a watcher
 * calls back on the loop's thread whenever the descriptor is ready.
 *
 * Signals: a signal watch makes the loop handle one signal (SIGINT,
 * SIGTERM, ...) for as long as it exists: deliveries are counted, a
 * callback runs on the loop's thread, and tasks can wait for the next
 * one. Only signals handed to the loop this way are taken over (libuv
 * installs its handler while a watch of that signal exists, and restores
 * the default when the last one stops); nothing else is touched. A
 * watched signal is unblocked on the loop's thread while a watch of it
 * exists there (a program may inherit a mask that blocks it, and would
 * then never see it); other threads keep their masks.
 *
 * Threads: everything here except cf_wait_fd outside a loop is for the
 * loop's thread (CF_EWRONGTHREAD elsewhere). Free watchers and watches
 * before their loop.
 */
#ifndef CF_IO_H
#define CF_IO_H

#include <stdint.h>

#include "cf/error.h"
#include "cf/loop.h"
#include "cf/time.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Readiness events (a bit set). */
enum cf_fd_events {
  CF_READABLE = 1u << 0, /**< data to read, or end of file / hang-up */
  CF_WRITABLE = 1u << 1  /**< room to write */
};

/**
 * Waits until fd is ready for one of `events` (CF_READABLE,
 * CF_WRITABLE), or the timeout passes. In a task it suspends the task;
 * elsewhere it blocks in poll(2). Returns 0 and the events that are ready
 * in *revents (if non-NULL; a hang-up or an error on the descriptor
 * counts as readable and writable, so that the next read or write reports
 * it), CF_ETIMEDOUT, CF_ECANCELED (the task was cancelled), CF_EINVAL (a
 * negative fd or timeout, no events), CF_EEXIST (another wait or watcher
 * of this loop has the descriptor), or another -errno (a descriptor that
 * cannot be polled: -EBADF, -EPERM for a regular file). A blocking
 * descriptor is blocking again when the wait returns (libuv makes it
 * non-blocking while a task's wait watches it).
 */
CF_EXTERN int cf_wait_fd(int fd, unsigned events, int64_t timeout_ns,
                         unsigned *revents);

typedef struct cf_fd_watch cf_fd_watch;

/** Called on the loop's thread while the descriptor is ready: revents are
 * the ready events, or a negative -errno if polling failed. */
typedef void (*cf_fd_fn)(void *arg, int fd, int revents);

/**
 * Watches fd for `events` on the loop (loop thread): cb(arg, fd, revents)
 * runs on each turn where it is ready (level-triggered, like poll). Returns
 * 0 and the watcher in *out, CF_EWRONGTHREAD, CF_EINVAL, CF_EEXIST (the
 * descriptor is watched already), CF_ENOMEM, or -errno.
 */
CF_EXTERN int cf_fd_watch_start(cf_loop *loop, int fd, unsigned events,
                                cf_fd_fn cb, void *arg, cf_fd_watch **out);

/** Changes the events watched (0 pauses the watcher). Loop thread. */
CF_EXTERN int cf_fd_watch_update(cf_fd_watch *w, unsigned events);

/** Stops the watcher and frees it (loop thread; NULL is ignored). The
 * callback does not run after this returns; the descriptor is not
 * closed. */
CF_EXTERN void cf_fd_watch_free(cf_fd_watch *w);

typedef struct cf_signal_watch cf_signal_watch;

/** Called on the loop's thread for each delivery of the signal. */
typedef void (*cf_signal_fn)(void *arg, int signum);

/**
 * Makes the loop handle signum (loop thread): from now on each delivery
 * is counted, cb (if non-NULL) runs on the loop's thread, and one waiting
 * task is woken (cf_signal_wait). If the loop's thread blocks signum, it
 * is unblocked there until the last watch of it on that thread is freed,
 * and blocked again then (a delivery held back by the mask is handled at
 * once; a loop that moved to another thread since leaves it unblocked
 * on the first). Returns 0 and the watch in *out,
 * CF_EWRONGTHREAD, CF_EINVAL (not a signal that can be caught), CF_ENOMEM.
 */
CF_EXTERN int cf_signal_watch_start(cf_loop *loop, int signum, cf_signal_fn cb,
                                    void *arg, cf_signal_watch **out);

/**
 * Waits (in a task: suspends) for a delivery of the watch's signal: one
 * that arrived since the watch started and nobody waited for yet, or the
 * next one. Deliveries are consumed one per wait, oldest first (several
 * deliveries of one signal before the loop runs may count as one, as the
 * kernel merges them). Returns 0, CF_ETIMEDOUT, CF_ECANCELED (the task was
 * cancelled, or the watch was freed while waiting), CF_ENOTTASK outside a
 * task, CF_EINVAL.
 */
CF_EXTERN int cf_signal_wait(cf_signal_watch *w, int64_t timeout_ns);

/** How many deliveries have been counted since the watch started. */
CF_EXTERN uint64_t cf_signal_watch_get_count(const cf_signal_watch *w);

/** Stops handling the signal (the default returns if this was the last
 * watch of it) and frees the watch; tasks waiting on it get CF_ECANCELED.
 * Loop thread; NULL is ignored. */
CF_EXTERN void cf_signal_watch_free(cf_signal_watch *w);

/**
 * Raises this process's soft limit on open descriptors (RLIMIT_NOFILE) to
 * its hard limit, as servers holding many connections need. Returns 0 and
 * the new soft limit in *limit (if non-NULL), or -errno.
 */
CF_EXTERN int cf_raise_fd_limit(uint64_t *limit);

#ifdef __cplusplus
}
#endif

#endif /* CF_IO_H */
