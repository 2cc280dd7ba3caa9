/*
 * The process pool (cf/process_pool.h).
 *
 * Parent: one manager thread per pool owns the workers (a pid and a
 * socket each): it hands queued tasks to idle workers, reads results and
 * completes the futures, notices deaths (end of stream on the socket,
 * then waitpid for the reason), kills workers whose task ran past its
 * time limit or was cancelled, and replaces workers. Submitters only
 * append to the queue under the pool's lock and wake the manager through
 * an eventfd. Futures are completed without the lock held (callbacks may
 * submit again).
 *
 * Workers: this program exec'ed with CF_PROCESS_WORKER=3 in the
 * environment and the socket on descriptor 3; cf_process_init at the top
 * of main recognises it, closes every other inherited descriptor, and
 * serves frames until the socket closes.
 *
 * Frames, both ways: a header {type, aux, length} and length bytes (aux
 * is FRAME_MAGIC; the reader checks it, and whether the type may come
 * now, before it waits for the payload):
 *   INIT    parent -> worker: initializer name, its argument, max tasks
 *   READY   worker -> parent: initializer done (or INITFAIL: code, message)
 *   TASK    parent -> worker: id, task name, sized flag, argument
 *   RESULT  worker -> parent: id, code, value (word or bytes, type), message
 *   CHUNK   parent -> worker: id, task name, item size, n, the items (a
 *           map's chunk: cf__map_chunk in executor_int.h)
 *   CHUNKRES worker -> parent: id, results done, code and message of the
 *           item that failed, the items' time in the worker, the values
 * A malformed frame ends the connection (the worker exits; a bad frame
 * from a worker fails its task with -EPROTO and the worker is replaced).
 */
#define _GNU_SOURCE
#include "cf/process_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cf/registry.h"
#include "cf/time.h"
#include "common.h"
#include "executor_int.h"
#include "future_int.h"
#include "registry_int.h"

extern char **environ;

enum { F_INIT = 1, F_READY, F_INITFAIL, F_TASK, F_RESULT, F_CHUNK, F_CHUNKRES };
enum { WORKER_FD = 3 };
#define ENV_NAME "CF_PROCESS_WORKER"
#define MAX_FRAME ((uint64_t)1 << 32) /* 4 GiB: larger is malformed */
/* Every header's aux word, checked on arrival: a stray write to the
 * socket (a task writing to descriptor 3) is told from a frame at once,
 * not after the reader has waited for the length it claims. */
#define FRAME_MAGIC 0x52504643u /* "CFPR" */
/* The largest argument or result that crosses: 1 GiB (-EMSGSIZE). */
#define MAX_PAYLOAD ((uint64_t)1 << 30)
/* A task with an argument up to this size goes straight to an idle
 * worker from submit (the frame is written under the pool's lock). */
#define DIRECT_MAX ((size_t)16 << 10)
/* How long a worker, and the manager, poll before they sleep. */
#define SPIN_NS ((int64_t)50000)

typedef struct frame_hdr {
  uint32_t type;
  uint32_t aux;
  uint64_t len;
} frame_hdr;

static bool init_called;

/* ---------------------------------------------------------------------- */
/* Byte I/O and frame building                                            */

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

static int read_all(int fd, void *p, size_t n) {
  char *c = p;
  while (n > 0) {
    ssize_t k = read(fd, c, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return k == 0 ? CF_EEOF : -errno;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

/* A growable buffer for building frames. */
typedef struct buf {
  char *p;
  size_t len, cap;
  bool failed;
} buf;

static void put(buf *b, const void *d, size_t n) {
  if (b->failed)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (np == NULL) {
      b->failed = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, sizeof v); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, sizeof v); }
static void put_str(buf *b, const char *s) {
  size_t n = s ? strlen(s) : 0;
  put_u32(b, (uint32_t)n);
  put(b, s, n);
}

static int send_frame(int fd, uint32_t type, const buf *b) {
  frame_hdr h = {type, FRAME_MAGIC, b->len};
  int rc = write_all(fd, &h, sizeof h);
  if (rc == 0 && b->len > 0)
    rc = write_all(fd, b->p, b->len);
  return rc;
}

/* A reader over a received frame's payload. */
typedef struct rd {
  const char *p;
  size_t len, off;
  bool bad;
} rd;

static const void *take(rd *r, size_t n) {
  if (r->bad || n > r->len - r->off) {
    r->bad = true;
    return NULL;
  }
  const void *p = r->p + r->off;
  r->off += n;
  return p;
}

static uint32_t take_u32(rd *r) {
  uint32_t v = 0;
  const void *p = take(r, sizeof v);
  if (p)
    memcpy(&v, p, sizeof v);
  return v;
}

static uint64_t take_u64(rd *r) {
  uint64_t v = 0;
  const void *p = take(r, sizeof v);
  if (p)
    memcpy(&v, p, sizeof v);
  return v;
}

/* A string of the payload, copied and NUL-terminated (NULL if bad). */
static char *take_str(rd *r) {
  uint32_t n = take_u32(r);
  const char *s = take(r, n);
  if (s == NULL)
    return NULL;
  char *c = malloc((size_t)n + 1);
  if (c == NULL) {
    r->bad = true;
    return NULL;
  }
  memcpy(c, s, n);
  c[n] = '\0';
  return c;
}

/* ---------------------------------------------------------------------- */
/* The worker                                                             */

static void put_value(buf *b, const cf_value *v) {
  bool bytes = v->size > 0 || (v->u.ptr != NULL && v->dtor != NULL);
  put_u32(b, bytes ? 1 : 0);
  put_str(b, v->type);
  if (bytes) {
    put_u64(b, v->size);
    put(b, v->u.ptr, v->size);
  } else
    put(b, &v->u, sizeof v->u);
}

/* Runs one task frame and sends its result. */
static int serve_task(int fd, rd *r) {
  uint64_t id = take_u64(r);
  char *name = take_str(r);
  uint32_t sized = take_u32(r);
  uint64_t len = take_u64(r);
  void *arg = NULL;
  char *argbuf = NULL;
  if (!r->bad && sized) {
    const void *bytes = take(r, len);
    if (bytes != NULL && (argbuf = cf__arg_alloc(len)) != NULL) {
      memcpy(argbuf, bytes, len);
      arg = argbuf;
    } else
      r->bad = true;
  } else
    arg = (void *)(uintptr_t)len; /* a pointer-sized value */
  if (r->bad) {
    free(name);
    cf__arg_free(argbuf);
    return -EPROTO;
  }
  cf_value v = CF_VALUE_INIT;
  char *msg = NULL;
  int code;
  cf_task_fn fn = cf_task_lookup(name);
  if (fn == NULL) {
    code = CF_EUNKNOWNTASK;
    char m[320];
    snprintf(m, sizeof m, "no task named '%s' in the worker", name);
    msg = strdup(m);
  } else {
    code = fn(arg, &v);
    if (code > 0)
      code = CF_ETASK;
    if (code != 0) {
      msg = cf__raise_take(code);
      cf_value_release(&v);
    } else if (v.size > MAX_PAYLOAD) {
      char m[160];
      snprintf(m, sizeof m, "a result of %zu bytes is over the pool's limit "
               "of 1 GiB", v.size);
      cf_value_release(&v);
      code = -EMSGSIZE;
      msg = strdup(m);
    }
  }
  buf b = {0};
  put_u64(&b, id);
  put_u32(&b, (uint32_t)code);
  put_value(&b, &v);
  put_str(&b, msg);
  int rc = b.failed ? CF_ENOMEM : send_frame(fd, F_RESULT, &b);
  free(b.p);
  free(msg);
  cf_value_release(&v);
  cf__arg_free(argbuf);
  free(name);
  return rc;
}

/* Runs a map chunk: its items in order until one fails. */
static int serve_chunk(int fd, rd *r) {
  uint64_t id = take_u64(r);
  char *name = take_str(r);
  uint64_t item_size = take_u64(r);
  uint64_t n = take_u64(r);
  size_t per = item_size > 0 ? (size_t)item_size : sizeof(uint64_t);
  const char *items = n <= SIZE_MAX / per ? take(r, (size_t)n * per) : NULL;
  if (r->bad || items == NULL) {
    free(name);
    return -EPROTO;
  }
  cf_task_fn fn = cf_task_lookup(name);
  /* Each sized item is copied to an aligned buffer before its call. */
  char *item = item_size > 0 ? cf__arg_alloc(item_size) : NULL;
  buf vals = {0};
  uint64_t nok = 0;
  int code = 0;
  char *msg = NULL;
  int64_t t0 = cf_now_ns();
  if (fn == NULL) {
    code = CF_EUNKNOWNTASK;
    char m[320];
    snprintf(m, sizeof m, "no task named '%s' in the worker", name);
    msg = strdup(m);
  } else if (item_size > 0 && item == NULL)
    code = CF_ENOMEM;
  for (uint64_t i = 0; code == 0 && i < n; i++) {
    void *arg;
    if (item_size > 0) {
      memcpy(item, items + i * per, per);
      arg = item;
    } else {
      uint64_t v;
      memcpy(&v, items + i * per, sizeof v);
      arg = (void *)(uintptr_t)v;
    }
    cf_value v = CF_VALUE_INIT;
    code = fn(arg, &v);
    if (code > 0)
      code = CF_ETASK;
    if (code != 0) {
      msg = cf__raise_take(code);
      cf_value_release(&v);
      break;
    }
    put_value(&vals, &v);
    cf_value_release(&v);
    nok++;
  }
  /* The items' own time: the map sizes its chunks on it (the transport is
   * what bigger chunks amortise, not part of an item's cost). */
  uint64_t elapsed = (uint64_t)(cf_now_ns() - t0);
  buf b = {0};
  put_u64(&b, id);
  put_u64(&b, nok);
  put_u32(&b, (uint32_t)code);
  put_str(&b, msg);
  put_u64(&b, elapsed);
  put(&b, vals.p, vals.len);
  int rc = b.failed || vals.failed ? CF_ENOMEM : send_frame(fd, F_CHUNKRES, &b);
  free(b.p);
  free(vals.p);
  free(msg);
  cf__arg_free(item);
  free(name);
  return rc;
}

/* Ends a worker: what its tasks printed is flushed (stdio buffers die
 * with _exit), nothing else of the program's exit runs. */
static _Noreturn void worker_exit(int status) {
  fflush(NULL);
  _exit(status);
}

static _Noreturn void worker_main(int fd) {
  /* Ctrl-C goes to the caller, which ends the workers by closing their
   * sockets; a caller that dies takes its workers with it. */
  signal(SIGINT, SIG_IGN);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1)
    worker_exit(0);
  /* Nothing inherited but the socket (and stdin, stdout, stderr). */
  if (syscall(SYS_close_range, WORKER_FD + 1, ~0U, 0) != 0)
    for (int i = WORKER_FD + 1; i < 1024; i++)
      close(i);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  long max_tasks = 0, done = 0;
  for (;;) {
    frame_hdr h;
    /* A short spin for the next task before sleeping in read: waking a
     * sleeping process costs tens of microseconds on a VM, most of a
     * round trip (bench/NOTES.md). */
    int64_t spin_until = cf_now_ns() + SPIN_NS;
    while (cf_now_ns() < spin_until) {
      ssize_t k = recv(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
      if (k != -1 || (errno != EAGAIN && errno != EINTR))
        break;
      sched_yield(); /* never starve the manager of a core */
    }
    if (read_all(fd, &h, sizeof h) != 0 || h.len > MAX_FRAME ||
        h.aux != FRAME_MAGIC)
      worker_exit(0);
    char *payload = malloc(h.len ? h.len : 1);
    if (payload == NULL || read_all(fd, payload, h.len) != 0)
      worker_exit(h.len && payload == NULL ? 3 : 0);
    rd r = {payload, h.len, 0, false};
    int rc = 0;
    if (h.type == F_INIT) {
      char *iname = take_str(&r);
      uint64_t alen = take_u64(&r);
      const void *a = take(&r, alen);
      max_tasks = (long)take_u64(&r);
      buf b = {0};
      if (r.bad)
        worker_exit(2);
      int code = 0;
      char *msg = NULL;
      if (iname[0] != '\0') {
        cf_task_fn fn = cf_task_lookup(iname);
        char *argbuf = cf__arg_alloc(alen);
        if (fn == NULL || argbuf == NULL) {
          code = fn == NULL ? CF_EUNKNOWNTASK : CF_ENOMEM;
        } else {
          memcpy(argbuf, a, alen);
          cf_value v = CF_VALUE_INIT;
          code = fn(argbuf, &v);
          if (code != 0)
            msg = cf__raise_take(code);
          cf_value_release(&v);
        }
        cf__arg_free(argbuf);
      }
      free(iname);
      if (code != 0) {
        put_u32(&b, (uint32_t)code);
        put_str(&b, msg);
        send_frame(fd, F_INITFAIL, &b);
        worker_exit(1);
      }
      rc = send_frame(fd, F_READY, &b);
      free(b.p);
    } else if (h.type == F_TASK) {
      rc = serve_task(fd, &r);
      done++;
    } else if (h.type == F_CHUNK) {
      rc = serve_chunk(fd, &r);
      done++;
    } else
      rc = -EPROTO;
    free(payload);
    if (rc != 0)
      worker_exit(2);
    if (max_tasks > 0 && done >= max_tasks)
      worker_exit(0); /* replaced by a fresh worker */
  }
}

int cf_process_init(int argc, char **argv) {
  (void)argc, (void)argv;
  init_called = true;
  const char *e = getenv(ENV_NAME);
  if (e == NULL)
    return 0;
  unsetenv(ENV_NAME); /* the worker's own children are not workers */
  worker_main(WORKER_FD);
}

/* ---------------------------------------------------------------------- */
/* The pool                                                               */

/* Per task, in the future's room. */
typedef struct task_room {
  const char *name; /* registry's: static */
  size_t arg_size;
  cf__map_chunk *chunk; /* a map's chunk (set when dispatched), or NULL */
  /* The chunk task's arg_dtor (the map's chunk reference for the task):
   * run once the future is settled, not at dispatch, because the
   * manager writes the results into the chunk until then. */
  void (*chunk_dtor)(void *);
  int64_t started;
  _Atomic int cancel; /* cancel requested while running */
} task_room;

typedef struct worker {
  pid_t pid;
  int fd;
  /* The process's pidfd (or -1: a kernel without pidfd_open): readable
   * once it has exited, also while a grandchild that a task forked keeps
   * the socket open. Valid while pid > 0. */
  int pidfd;
  bool ready;
  cf_future *task; /* running (a reference), or NULL */
  uint64_t task_id;
  int64_t deadline; /* of the running task, or CF_FOREVER */
  int killed_for;   /* 0, or CF_ECANCELED / CF_ETIMEDOUT: why we killed it */
  int ntasks;
  char *in; /* bytes read, not yet a whole frame */
  size_t in_len, in_cap;
} worker;

typedef struct pool {
  cf_executor base;
  cf_process_pool_opts o;
  char *initname;
  char *initarg;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* the manager's exit, for shutdown's wait */
  /* Guarded by mu: */
  cf_future **q;
  size_t qhead, qlen, qcap;
  bool shut, mgr_done, broken, mgr_joined;
  char broken_why[448]; /* why the pool broke (under mu): the message of
                           every task that fails with CF_EBROKEN after */
  _Atomic int running; /* tasks claimed for workers, not yet finished */
  /* Workers: read and written under mu, by the manager and by submitters
   * that hand a task straight to an idle worker. */
  worker *w;
  int nw;
  uint64_t next_id;
  pthread_t mgr;
  int efd;
  cf__cb_sink sink;
  /* Stats (cf_executor_stats): each outcome is counted before it is
   * published, so a waiter that sees a future done reads counters that
   * count it. */
  _Atomic uint64_t submitted, completed, failed, cancelled, callbacks_failed;
} pool;

/* The counter of an outcome: cancelled (by the pool or its user), an
 * error (a task's own CF_ECANCELED included: it ends FINISHED, as on the
 * thread pool), or a value. */
static _Atomic uint64_t *outcome_counter(pool *p, int err, bool cancelled) {
  return cancelled ? &p->cancelled : err != 0 ? &p->failed : &p->completed;
}

/* Settles a future the pool will not run (queued, or in a fork child),
 * counted; one a user cancelled while it was queued counts as
 * cancelled. Drops the pool's reference. */
static void settle_counted(pool *p, cf_future *f, int err, char *why) {
  if (cf__future_settle(f, err, why, &p->sink,
                        outcome_counter(p, err, err == CF_ECANCELED)) != 0)
    atomic_fetch_add(&p->cancelled, 1);
  cf_future_unref(f);
}

static bool worker_idle(const struct pool *p, const worker *w);
static int dispatch(struct pool *p, worker *w, cf_future *f);

static void wake(pool *p) {
  uint64_t one = 1;
  ssize_t k = write(p->efd, &one, sizeof one);
  (void)k;
}

static task_room *room_of(cf_future *f) { return cf__future_room(f); }

static int pp_submit(cf_executor *ex, const cf_task *task, int64_t deadline,
                     cf_future **out) {
  (void)deadline;
  pool *p = (pool *)ex;
  const char *name = task->name;
  if (task->fn == cf__map_chunk_task) { /* a map's chunk: its items' task */
    const cf__map_chunk *c = task->arg;
    name = c->name != NULL ? c->name : cf_task_name_of(c->fn);
  } else if (name == NULL && task->fn != NULL)
    name = cf_task_name_of(task->fn);
  if (name == NULL || cf_task_lookup(name) == NULL)
    return name == NULL ? CF_EINVAL : CF_EUNKNOWNTASK;
  name = cf_task_name_of(cf_task_lookup(name)); /* the static copy */
  if (task->arg_size > MAX_PAYLOAD)
    return -EMSGSIZE;
  cf_future *f = cf__future_alloc(ex, out != NULL ? 2 : 1, sizeof(task_room));
  if (f == NULL)
    return CF_ENOMEM;
  f->u.task.fn = task->fn;
  f->u.task.arg = task->arg;
  f->u.task.arg_dtor = task->arg_dtor;
  task_room *r = room_of(f);
  memset(r, 0, sizeof *r); /* the room comes uninitialised */
  r->name = name;
  r->arg_size = task->arg_size;
  atomic_init(&r->cancel, 0);
  pthread_mutex_lock(&p->mu);
  int rc = p->broken ? CF_EBROKEN : p->shut ? CF_ESHUTDOWN : 0;
  if (rc == 0 && p->qlen == p->qcap) {
    size_t cap = p->qcap ? p->qcap * 2 : 64;
    cf_future **nq = malloc(cap * sizeof *nq);
    if (nq == NULL)
      rc = CF_ENOMEM;
    else {
      for (size_t i = 0; i < p->qlen; i++)
        nq[i] = p->q[(p->qhead + i) % p->qcap];
      free(p->q);
      p->q = nq;
      p->qcap = cap;
      p->qhead = 0;
    }
  }
  bool direct = false;
  if (rc == 0 && p->qlen == 0 && atomic_load(&p->running) == 0 &&
      task->arg_size <= DIRECT_MAX) {
    /* Nothing else under way: an idle worker takes it from here, one
     * hand-off less than through the manager (which still reads the
     * result). With work under way the manager dispatches: batches of
     * submits then cost the submitter no socket writes. */
    for (int i = 0; i < p->nw && !direct; i++) {
      worker *w = &p->w[i];
      if (!worker_idle(p, w))
        continue;
      if (out != NULL)
        *out = f; /* before the claim: the caller's reference */
      atomic_fetch_add(&p->submitted, 1);
      if (!cf__future_claim(f)) /* cannot happen: nobody else has it */
        break;
      atomic_fetch_add(&p->running, 1);
      direct = true;
      /* A failed write: the worker is gone, and the manager's poll sees
       * its end of stream, retires it and fails the task. A frame that
       * could not be built (no memory) never reached it: the worker is
       * ended, so that the same path fails the task. */
      if (dispatch(p, w, f) != 0)
        kill(w->pid, SIGKILL);
    }
  }
  if (rc == 0 && !direct) {
    p->q[(p->qhead + p->qlen++) % p->qcap] = f;
    atomic_fetch_add(&p->submitted, 1);
  }
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    cf__future_discard(f);
    return rc;
  }
  if (!direct || p->o.task_timeout_ns > 0) /* a deadline to watch */
    wake(p);
  if (out != NULL)
    *out = f;
  return 0;
}

static int pp_cancel(cf_executor *ex, cf_future *f) {
  pool *p = (pool *)ex;
  atomic_store(&room_of(f)->cancel, 1);
  wake(p);
  return 0; /* delivered: the manager kills its worker */
}

/* Takes the next queued future (a reference), or NULL. */
static cf_future *queue_pop(pool *p) {
  if (p->qlen == 0)
    return NULL;
  cf_future *f = p->q[p->qhead];
  p->qhead = (p->qhead + 1) % p->qcap;
  p->qlen--;
  return f;
}

/* Starts a worker in slot w. 0 or -errno. */
static int spawn_worker(pool *p, worker *w) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  /* The child's end goes to descriptor 3 by dup2, which clears its
   * close-on-exec; it must not already be 3. */
  int child = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
  close(sv[1]);
  if (child < 0) {
    close(sv[0]);
    return -errno;
  }
  size_t nenv = 0;
  while (environ[nenv] != NULL)
    nenv++;
  char **envp = malloc((nenv + 2) * sizeof *envp);
  if (envp == NULL) {
    close(sv[0]);
    close(child);
    return CF_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], ENV_NAME "=", sizeof ENV_NAME) != 0)
      envp[k++] = environ[i];
  envp[k++] = (char *)(uintptr_t)ENV_NAME "=3";
  envp[k] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, child, WORKER_FD);
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char *argv[] = {(char *)(uintptr_t) "cfutures-worker", NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  free(envp);
  close(child);
  if (rc != 0) {
    close(sv[0]);
    return -rc;
  }
  memset(w, 0, sizeof *w);
  w->pid = pid;
  w->fd = sv[0];
#ifdef SYS_pidfd_open
  w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec */
#else
  w->pidfd = -1;
#endif
  w->deadline = CF_FOREVER;
  buf b = {0};
  put_str(&b, p->initname ? p->initname : "");
  put_u64(&b, p->o.initarg_size);
  put(&b, p->initarg, p->o.initarg_size);
  put_u64(&b, (uint64_t)(p->o.max_tasks_per_child > 0 ? p->o.max_tasks_per_child
                                                      : 0));
  rc = b.failed ? CF_ENOMEM : send_frame(w->fd, F_INIT, &b);
  free(b.p);
  return 0; /* a failed INIT shows as the worker's death */
}

/* Describes how a worker ended, for the message of its task. */
static void describe_exit(int status, char *m, size_t size) {
  if (WIFSIGNALED(status))
    snprintf(m, size, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else if (WIFEXITED(status))
    snprintf(m, size, "exited with status %d", WEXITSTATUS(status));
  else
    snprintf(m, size, "ended");
}

/* A finished or failed future to complete once the manager is outside
 * the lock. */
typedef struct done_rec {
  cf_future *f;
  cf__outcome o;
  bool cancelled;
} done_rec;

typedef struct done_list {
  done_rec *v;
  size_t n, cap;
} done_list;

static void done_add(done_list *d, cf_future *f, int err, char *msg,
                     const cf_value *val, bool cancelled) {
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 16;
    done_rec *nv = realloc(d->v, cap * sizeof *nv);
    if (nv == NULL) { /* a few records: losing one would lose a task */
      fprintf(stderr, "cfutures: process pool: out of memory\n");
      abort();
    }
    d->v = nv;
    d->cap = cap;
  }
  done_rec *r = &d->v[d->n++];
  r->f = f;
  r->o = (cf__outcome){err, msg, CF_VALUE_INIT};
  if (val)
    r->o.value = *val;
  r->cancelled = cancelled;
}

/* After f is settled: releases the task's reference on its map chunk,
 * if it carried one (see task_room). Before the pool drops f. */
static void settled_chunk_release(cf_future *f) {
  task_room *tr = room_of(f);
  void (*dtor)(void *) = tr->chunk_dtor;
  tr->chunk_dtor = NULL;
  if (dtor != NULL)
    dtor(tr->chunk);
}

static void done_flush(pool *p, done_list *d) {
  if (d->n == 0)
    return;
  /* Each was claimed and counted running: not running once its future
   * is seen done (stats), and the manager, the one that ends the pool
   * when nothing runs, flushes before it looks. */
  atomic_fetch_sub(&p->running, (int)d->n);
  for (size_t i = 0; i < d->n; i++) {
    done_rec *r = &d->v[i];
    atomic_fetch_add(outcome_counter(p, r->o.err, r->cancelled), 1);
    if (r->cancelled)
      cf__future_finish_cancelled(r->f, &p->sink);
    else
      cf__future_finish(r->f, &r->o, &p->sink);
    settled_chunk_release(r->f);
    cf_future_unref(r->f);
  }
  d->n = 0;
}

/* A value's type label crosses as a string; the future keeps a static
 * one: the labels of cf/registry.h's helpers, else "bytes" for a buffer
 * and none for a word. */
static const char *known_label(const char *type, bool bytes) {
  static const char *const labels[] = {"str", "bytes", "int", "float"};
  if (type != NULL)
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
      if (strcmp(type, labels[i]) == 0 && (i < 2) == bytes)
        return labels[i];
  return bytes && type != NULL && type[0] != '\0' ? "bytes" : NULL;
}

/* Reads one value of a result into *v. */
static void take_value(rd *r, cf_value *v) {
  uint32_t bytes = take_u32(r);
  char *type = take_str(r);
  *v = (cf_value)CF_VALUE_INIT;
  if (bytes) {
    uint64_t n = take_u64(r);
    const void *data = take(r, n);
    if (data != NULL && cf_value_set_bytes(v, data, n) != 0)
      r->bad = true;
  } else {
    const void *u = take(r, sizeof v->u);
    if (u)
      memcpy(&v->u, u, sizeof v->u);
  }
  if (!r->bad)
    v->type = known_label(type, bytes != 0);
  free(type);
}

/* Parses a RESULT frame into the worker's future's outcome. */
static int parse_result(worker *w, rd *r, done_list *d) {
  uint64_t id = take_u64(r);
  int code = (int)take_u32(r);
  cf_value v;
  take_value(r, &v);
  char *msg = take_str(r);
  if (r->bad || w->task == NULL || id != w->task_id ||
      room_of(w->task)->chunk != NULL) {
    free(msg);
    cf_value_release(&v);
    return -EPROTO;
  }
  if (code != 0) {
    cf_value_release(&v);
    if (msg != NULL && msg[0] == '\0') {
      free(msg);
      msg = NULL;
    }
  } else {
    free(msg);
    msg = NULL;
  }
  done_add(d, w->task, code, msg, code == 0 ? &v : NULL, false);
  w->task = NULL;
  w->deadline = CF_FOREVER;
  w->ntasks++;
  return 0;
}


/* A CHUNKRES frame: the chunk's results, then its future finished. */
static int parse_chunk_result(worker *w, rd *r, done_list *d) {
  uint64_t id = take_u64(r);
  uint64_t nok = take_u64(r);
  int code = (int)take_u32(r);
  char *msg = take_str(r);
  uint64_t elapsed = take_u64(r);
  task_room *tr = w->task ? room_of(w->task) : NULL;
  cf__map_chunk *c = tr ? tr->chunk : NULL;
  if (r->bad || c == NULL || id != w->task_id || nok > c->n) {
    free(msg);
    return -EPROTO;
  }
  if (c->results_cap < c->n) {
    free(c->results);
    c->results_cap = 0;
    c->results = malloc((c->n ? c->n : 1) * sizeof *c->results);
    if (c->results == NULL) {
      free(msg);
      return CF_ENOMEM;
    }
    c->results_cap = c->n;
  }
  c->plain = false;
  size_t got = 0;
  for (; got < nok && !r->bad; got++)
    take_value(r, &c->results[got]);
  if (r->bad) {
    for (size_t i = 0; i < got; i++)
      cf_value_release(&c->results[i]);
    free(msg);
    return -EPROTO;
  }
  c->nok = (size_t)nok;
  c->err = code;
  c->errmsg = code != 0 && msg != NULL && msg[0] != '\0' ? msg : NULL;
  if (c->errmsg == NULL)
    free(msg);
  c->elapsed_ns = (int64_t)elapsed;
  /* The chunk's own future fails with the item's error, as in-process. */
  done_add(d, w->task, code,
           code != 0 && c->errmsg != NULL ? strdup(c->errmsg) : NULL, NULL,
           false);
  w->task = NULL;
  w->deadline = CF_FOREVER;
  w->ntasks++;
  return 0;
}

/* Reads what the worker sent and handles whole frames. Returns 0, or
 * nonzero when the connection is over (EOF, error, bad frame). */
/* Whether a header from worker w can start a frame now: the magic, a
 * type the worker may send in its state, and a length that type can
 * have. Checked before waiting for the payload, so that garbage never
 * makes the manager wait for bytes that will not come. */
static bool header_fits(const worker *w, const frame_hdr *h) {
  if (h->aux != FRAME_MAGIC || h->len > MAX_FRAME)
    return false;
  bool running = w->ready && w->task != NULL && w->task_id != 0;
  switch (h->type) {
  case F_READY:
    return !w->ready && h->len == 0;
  case F_INITFAIL:
    return !w->ready;
  case F_RESULT:
  case F_CHUNKRES:
    return running;
  default:
    return false;
  }
}

#define IN_KEEP ((size_t)1 << 20) /* a worker's input buffer kept between frames */

static int pump(pool *p, worker *w, done_list *d, bool *broke) {
  if (w->in_cap - w->in_len < 65536) {
    size_t cap = w->in_cap ? w->in_cap * 2 : 65536;
    char *n = realloc(w->in, cap);
    if (n == NULL)
      return CF_ENOMEM;
    w->in = n;
    w->in_cap = cap;
  }
  ssize_t k = read(w->fd, w->in + w->in_len, w->in_cap - w->in_len);
  if (k < 0 && (errno == EINTR || errno == EAGAIN))
    return 0;
  if (k <= 0)
    return k == 0 ? CF_EEOF : -errno;
  w->in_len += (size_t)k;
  size_t off = 0;
  int rc = 0;
  while (rc == 0 && w->in_len - off >= sizeof(frame_hdr)) {
    frame_hdr h;
    memcpy(&h, w->in + off, sizeof h);
    if (!header_fits(w, &h)) {
      rc = -EPROTO;
      break;
    }
    if (w->in_len - off - sizeof h < h.len)
      break; /* not all here yet */
    rd r = {w->in + off + sizeof h, h.len, 0, false};
    off += sizeof h + h.len;
    if (h.type == F_READY)
      w->ready = true;
    else if (h.type == F_RESULT)
      rc = parse_result(w, &r, d);
    else if (h.type == F_CHUNKRES)
      rc = parse_chunk_result(w, &r, d);
    else if (h.type == F_INITFAIL) {
      int code = (int)take_u32(&r);
      char *msg = take_str(&r);
      fprintf(stderr, "cfutures: process pool initializer '%s' failed: %s\n",
              p->initname, msg && msg[0] ? msg : cf_strerror(code));
      if (p->broken_why[0] == '\0')
        snprintf(p->broken_why, sizeof p->broken_why,
                 "the pool is broken: initializer '%s' failed: %s",
                 p->initname, msg && msg[0] ? msg : cf_strerror(code));
      free(msg);
      *broke = true;
      rc = CF_EBROKEN;
    } else
      rc = -EPROTO;
  }
  memmove(w->in, w->in + off, w->in_len - off);
  w->in_len -= off;
  if (w->in_cap > IN_KEEP && w->in_len <= IN_KEEP / 2) {
    /* A large frame is done: do not keep its buffer for the worker's
     * life (a failed shrink keeps the larger one). */
    char *n = realloc(w->in, IN_KEEP);
    if (n != NULL) {
      w->in = n;
      w->in_cap = IN_KEEP;
    }
  }
  return rc;
}

/* A claimed task that never reached a worker: its argument is ours to
 * release (the contract: whoever claims the future owns the arg). */
static void drop_undispatched_arg(cf_future *f) {
  cf__task_rec t;
  cf__future_take_task(f, &t);
  if (t.arg_dtor != NULL)
    t.arg_dtor(t.arg);
}

/* The pool let the worker go (closed its socket): it exits by itself,
 * flushing its output. Any other reason to retire kills it first. */
#define RETIRE_LET_GO 1

/* The worker is gone (or must go): reap it and settle its task. With mu
 * held. Killed first unless the pool let it go: also at its end of
 * stream, which it reaches only in _exit (then the kill costs nothing)
 * or after a task closed descriptor 3 while the worker runs on (then
 * waiting for it would hold mu, and stop the pool, for as long as the
 * task runs). */
static void retire(pool *p, worker *w, int why, done_list *d) {
  if (w->pid > 0) {
    if (why != RETIRE_LET_GO)
      kill(w->pid, SIGKILL);
    int status = 0;
    pid_t r;
    while ((r = waitpid(w->pid, &status, 0)) < 0 && errno == EINTR)
      ;
    if (w->task != NULL) {
      if (w->task_id == 0) /* waited for the worker to be ready */
        drop_undispatched_arg(w->task);
      char how[96], m[400];
      if (r < 0)
        snprintf(how, sizeof how, "ended (status unknown: %s)", strerror(errno));
      else
        describe_exit(status, how, sizeof how);
      task_room *tr = room_of(w->task);
      bool broken = p->broken; /* the caller holds mu */
      int code = w->killed_for == CF_ETIMEDOUT ? CF_ETIMEDOUT
                 : broken || p->o.broken_on_crash ? CF_EBROKEN
                 : why == -EPROTO                 ? -EPROTO
                                                  : CF_EWORKER;
      if (tr->chunk != NULL && w->killed_for != CF_ECANCELED) {
        /* A map's chunk: its first item takes the failure. */
        tr->chunk->nok = 0;
        tr->chunk->err = code;
        tr->chunk->errmsg = NULL;
      }
      if (w->killed_for == CF_ECANCELED)
        done_add(d, w->task, 0, NULL, NULL, true);
      else if (w->killed_for == CF_ETIMEDOUT) {
        snprintf(m, sizeof m,
                 "task '%s' ran past its time limit of %.3g s: worker %d "
                 "killed",
                 tr->name, (double)p->o.task_timeout_ns / 1e9, (int)w->pid);
        done_add(d, w->task, CF_ETIMEDOUT, strdup(m), NULL, false);
      } else if (why == -EPROTO && !broken && !p->o.broken_on_crash) {
        snprintf(m, sizeof m,
                 "worker %d sent a malformed frame while running task '%s'; "
                 "it was ended",
                 (int)w->pid, tr->name);
        done_add(d, w->task, code, strdup(m), NULL, false);
      } else if (broken && p->broken_why[0] != '\0') {
        /* Ended by the pool because it is broken: say why it is. */
        done_add(d, w->task, code, strdup(p->broken_why), NULL, false);
      } else {
        if (w->task_id == 0) /* it never reached the worker */
          snprintf(m, sizeof m, "worker %d %s before task '%s' started",
                   (int)w->pid, how, tr->name);
        else
          snprintf(m, sizeof m, "worker %d running task '%s' %s", (int)w->pid,
                   tr->name, how);
        done_add(d, w->task, code, strdup(m), NULL, false);
        if (p->o.broken_on_crash) {
          p->broken = true;
          if (p->broken_why[0] == '\0')
            snprintf(p->broken_why, sizeof p->broken_why,
                     "the pool is broken (broken_on_crash): %s", m);
        }
      }
      w->task = NULL;
    }
  }
  if (w->fd >= 0)
    close(w->fd);
  if (w->pid > 0 && w->pidfd >= 0)
    close(w->pidfd);
  free(w->in);
  memset(w, 0, sizeof *w);
  w->fd = -1;
  w->pidfd = -1;
}

/* Sends f to worker w. */
static int dispatch(struct pool *p, worker *w, cf_future *f) {
  cf__task_rec t;
  cf__future_take_task(f, &t);
  task_room *r = room_of(f);
  buf b = {0};
  w->task_id = ++p->next_id;
  put_u64(&b, w->task_id);
  put_str(&b, r->name);
  uint32_t type = F_TASK;
  if (t.fn == cf__map_chunk_task) {
    cf__map_chunk *c = t.arg;
    r->chunk = c;
    r->chunk_dtor = t.arg_dtor;
    t.arg_dtor = NULL; /* settled_chunk_release runs it */
    type = F_CHUNK;
    put_u64(&b, c->item_size);
    put_u64(&b, c->n);
    for (size_t i = 0; i < c->n; i++) {
      void *item = cf__map_chunk_item(c, i);
      if (c->item_size > 0)
        put(&b, item, c->item_size);
      else
        put_u64(&b, (uint64_t)(uintptr_t)item);
    }
  } else {
    put_u32(&b, r->arg_size > 0 ? 1 : 0);
    if (r->arg_size > 0) {
      put_u64(&b, r->arg_size);
      put(&b, t.arg, r->arg_size);
    } else
      put_u64(&b, (uint64_t)(uintptr_t)t.arg);
  }
  if (t.arg_dtor != NULL)
    t.arg_dtor(t.arg); /* the bytes are copied */
  r->started = cf_now_ns();
  w->task = f;
  w->deadline = p->o.task_timeout_ns > 0
                    ? cf_now_ns() + p->o.task_timeout_ns
                    : CF_FOREVER;
  int rc = b.failed ? CF_ENOMEM : send_frame(w->fd, type, &b);
  free(b.p);
  return rc;
}

static void settle_queue(pool *p, int err, done_list *d) {
  (void)d;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    cf_future *f = queue_pop(p);
    char *why = err == CF_EBROKEN && p->broken_why[0] != '\0'
                    ? strdup(p->broken_why)
                    : NULL;
    pthread_mutex_unlock(&p->mu);
    if (f == NULL) {
      free(why);
      break;
    }
    settle_counted(p, f, err, why);
  }
}

/* Whether w can take a task now. With mu held. */
static bool worker_idle(const struct pool *p, const worker *w) {
  return w->pid > 0 && w->ready && w->task == NULL && !w->killed_for &&
         !(p->o.max_tasks_per_child > 0 &&
           w->ntasks >= p->o.max_tasks_per_child);
}

static void *manager(void *arg) {
  pool *p = arg;
  done_list d = {0};
  d.cap = 4 * (size_t)p->nw + 16; /* more than one iteration produces */
  d.v = malloc(d.cap * sizeof *d.v);
  /* The eventfd, and each worker's socket and pidfd. */
  struct pollfd *pfd = calloc(2 * (size_t)p->nw + 1, sizeof *pfd);
  int *which = calloc(2 * (size_t)p->nw + 1, sizeof *which);
  if (d.v == NULL || pfd == NULL || which == NULL) {
    fprintf(stderr, "cfutures: process pool: out of memory\n");
    abort();
  }
  pthread_mutex_lock(&p->mu);
  for (;;) {
    bool broke = false;
    if (p->broken) {
      for (int i = 0; i < p->nw; i++)
        if (p->w[i].pid > 0)
          retire(p, &p->w[i], CF_EBROKEN, &d);
      for (size_t i = 0; i < d.n; i++)
        if (!d.v[i].cancelled && d.v[i].o.err == CF_EWORKER)
          d.v[i].o.err = CF_EBROKEN;
      pthread_mutex_unlock(&p->mu);
      done_flush(p, &d);
      settle_queue(p, CF_EBROKEN, &d);
      pthread_mutex_lock(&p->mu);
    }
    /* Hand queued tasks to idle workers, starting workers as needed. */
    for (int i = 0; i < p->nw && !p->broken; i++) {
      worker *w = &p->w[i];
      if (w->pid > 0 && !worker_idle(p, w))
        continue;
      cf_future *f = NULL;
      while ((f = queue_pop(p)) != NULL) {
        if (cf__future_claim(f)) {
          atomic_fetch_add(&p->running, 1);
          break;
        }
        atomic_fetch_add(&p->cancelled, 1); /* cancelled while queued */
        cf_future_unref(f);
      }
      if (f == NULL)
        break;
      if (w->pid <= 0 && spawn_worker(p, w) != 0) {
        drop_undispatched_arg(f);
        done_add(&d, f, CF_EWORKER, strdup("cannot start a worker process"),
                 NULL, false);
        continue;
      }
      if (!w->ready) {
        /* Not ready yet: the task waits in the worker's slot. */
        w->task = f;
        w->task_id = 0;
        continue;
      }
      if (dispatch(p, w, f) != 0)
        retire(p, w, -EPIPE, &d);
    }
    /* Done: shut down, nothing queued, nothing running. */
    if (p->shut && p->qlen == 0 && atomic_load(&p->running) == (int)d.n)
      break;
    /* Wait for a worker, the eventfd, or the next deadline. */
    int n = 0;
    pfd[n] = (struct pollfd){.fd = p->efd, .events = POLLIN};
    which[n++] = -1;
    int64_t next = CF_FOREVER, now = cf_now_ns();
    bool out = false; /* a task is with a worker: its answer is near */
    for (int i = 0; i < p->nw; i++) {
      worker *w = &p->w[i];
      if (w->pid <= 0)
        continue;
      pfd[n] = (struct pollfd){.fd = w->fd, .events = POLLIN};
      which[n++] = i;
      if (w->pidfd >= 0) {
        pfd[n] = (struct pollfd){.fd = w->pidfd, .events = POLLIN};
        which[n++] = -2 - i; /* the worker's exit */
      }
      if (w->task != NULL && w->task_id == 0 && !w->killed_for &&
          atomic_load(&room_of(w->task)->cancel)) {
        /* Cancelled while its fresh worker runs the initializer: the
         * worker goes (retire settles the task CANCELLED, unrun). */
        w->killed_for = CF_ECANCELED;
        kill(w->pid, SIGKILL);
      }
      if (w->task != NULL && w->task_id != 0) {
        out = true;
        if (atomic_load(&room_of(w->task)->cancel) && !w->killed_for) {
          w->killed_for = CF_ECANCELED;
          kill(w->pid, SIGKILL);
        } else if (w->deadline <= now && !w->killed_for) {
          w->killed_for = CF_ETIMEDOUT;
          kill(w->pid, SIGKILL);
        } else if (w->deadline < next)
          next = w->deadline;
      }
    }
    pthread_mutex_unlock(&p->mu);
    done_flush(p, &d);
    int ms = next == CF_FOREVER ? -1
             : next <= now      ? 0
                                : (int)((next - now) / 1000000 + 1);
    /* Spin with poll(0) a moment before sleeping (see SPIN_NS),
     * yielding the core unless an answer is due. */
    int ready = 0;
    if (ms != 0) {
      int64_t spin_until = cf_now_ns() + SPIN_NS;
      while ((ready = poll(pfd, (nfds_t)n, 0)) == 0 &&
             cf_now_ns() < spin_until)
        if (!out)
          sched_yield();
    }
    if (ready == 0 && poll(pfd, (nfds_t)n, ms) < 0 && errno != EINTR) {
      pthread_mutex_lock(&p->mu);
      break;
    }
    pthread_mutex_lock(&p->mu);
    for (int k = 0; k < n; k++) {
      if (pfd[k].revents == 0)
        continue;
      if (which[k] == -1) {
        uint64_t v;
        ssize_t r = read(p->efd, &v, sizeof v);
        (void)r;
        continue;
      }
      if (which[k] <= -2) {
        /* The process has exited, its socket perhaps still open in a
         * grandchild: what it sent first is read, then it is retired. */
        worker *w = &p->w[-2 - which[k]];
        if (w->pid <= 0 || w->pidfd != pfd[k].fd)
          continue; /* retired meanwhile */
        int rc = 0;
        struct pollfd sock = {.fd = w->fd, .events = POLLIN};
        while (rc == 0 && poll(&sock, 1, 0) > 0) /* (a read could block) */
          rc = pump(p, w, &d, &broke);
        if (broke)
          p->broken = true;
        retire(p, w, rc != 0 ? rc : CF_EEOF, &d);
        continue;
      }
      worker *w = &p->w[which[k]];
      if (w->pid <= 0 || w->fd != pfd[k].fd)
        continue; /* retired meanwhile */
      bool was_ready = w->ready;
      int rc = pump(p, w, &d, &broke);
      if (broke) /* before retire: its task fails as broken */
        p->broken = true;
      if (rc == 0 && !was_ready && w->ready && w->task != NULL &&
          w->task_id == 0) {
        cf_future *f = w->task; /* waited for the worker to be ready */
        w->task = NULL;
        rc = dispatch(p, w, f);
      }
      if (rc == 0 && w->task == NULL && p->o.max_tasks_per_child > 0 &&
          w->ntasks >= p->o.max_tasks_per_child)
        continue; /* it exits by itself: its end of stream retires it */
      if (rc != 0)
        retire(p, w, rc, &d);
    }
    if (broke)
      p->broken = true;
    pthread_mutex_unlock(&p->mu);
    done_flush(p, &d);
    pthread_mutex_lock(&p->mu);
  }
  for (int i = 0; i < p->nw; i++)
    if (p->w[i].pid > 0) {
      close(p->w[i].fd); /* end of stream: the worker exits */
      p->w[i].fd = -1;
    }
  for (int i = 0; i < p->nw; i++)
    if (p->w[i].pid > 0)
      retire(p, &p->w[i], RETIRE_LET_GO, &d);
  pthread_mutex_unlock(&p->mu);
  done_flush(p, &d);
  free(d.v);
  free(pfd);
  free(which);
  pthread_mutex_lock(&p->mu);
  p->mgr_done = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static int pp_shutdown(cf_executor *ex, unsigned flags, int64_t deadline) {
  pool *p = (pool *)ex;
  pthread_mutex_lock(&p->mu);
  p->shut = true;
  pthread_mutex_unlock(&p->mu);
  if (flags & CF_SHUTDOWN_CANCEL_FUTURES)
    settle_queue(p, CF_ECANCELED, NULL);
  wake(p);
  if (!(flags & CF_SHUTDOWN_WAIT))
    return 0;
  if (pthread_equal(pthread_self(), p->mgr))
    return CF_EDEADLK;
  pthread_mutex_lock(&p->mu);
  int rc = 0;
  while (!p->mgr_done && rc == 0) {
    if (deadline == CF_FOREVER)
      pthread_cond_wait(&p->cv, &p->mu);
    else {
      struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000),
                            .tv_nsec = (long)(deadline % 1000000000)};
      if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT &&
          !p->mgr_done)
        rc = CF_ETIMEDOUT;
    }
  }
  bool join = p->mgr_done && !p->mgr_joined;
  if (join)
    p->mgr_joined = true;
  pthread_mutex_unlock(&p->mu);
  if (join)
    pthread_join(p->mgr, NULL);
  return rc;
}

static void pp_destroy(cf_executor *ex) {
  pool *p = (pool *)ex;
  for (size_t i = 0; i < p->qlen; i++) /* none: shutdown drained them */
    cf_future_unref(p->q[(p->qhead + i) % p->qcap]);
  free(p->q);
  free(p->w);
  free(p->initname);
  free(p->initarg);
  close(p->efd);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
}

/* A done callback that failed while this pool completed its future:
 * counted (the sink), then reported as one no executor reports (the
 * process-wide handler, or a line on stderr): the pool has no hook of
 * its own. */
static void report_callback_error(void *ctx, cf_future *f, int rc) {
  (void)ctx;
  cf__report_callback_error(NULL, f, rc);
}

static void pp_stats(cf_executor *ex, cf_executor_stats *st) {
  pool *p = (pool *)ex;
  st->max_workers = (uint32_t)p->nw;
  /* The outcomes first, then submitted: while tasks move on, the sum
   * errs below submitted, never above it. */
  st->completed = atomic_load(&p->completed);
  st->failed = atomic_load(&p->failed);
  st->cancelled = atomic_load(&p->cancelled);
  st->callbacks_failed = atomic_load(&p->callbacks_failed);
  pthread_mutex_lock(&p->mu);
  st->queued = p->qlen;
  st->running = (uint64_t)p->running;
  uint32_t alive = 0, idle = 0;
  for (int i = 0; i < p->nw; i++) {
    alive += p->w[i].pid > 0;
    idle += worker_idle(p, &p->w[i]);
  }
  pthread_mutex_unlock(&p->mu);
  st->workers = alive;
  st->idle_workers = idle;
  st->submitted = atomic_load(&p->submitted);
}

static int pp_max_workers(cf_executor *ex) { return ((pool *)ex)->nw; }

static bool pp_is_own_thread(cf_executor *ex) {
  return pthread_equal(pthread_self(), ((pool *)ex)->mgr);
}

static void pp_forked(cf_executor *ex) {
  /* In a fork child: the manager and the workers are the parent's. */
  pool *p = (pool *)ex;
  p->mgr_done = true;
  p->mgr_joined = true;
  p->shut = true;
  for (size_t i = 0; i < p->qlen; i++)
    settle_counted(p, p->q[(p->qhead + i) % p->qcap], CF_EFORKED, NULL);
  p->qlen = 0;
  for (int i = 0; i < p->nw; i++) {
    worker *w = &p->w[i];
    if (w->task != NULL) {
      cf__outcome o = {CF_EFORKED, NULL, CF_VALUE_INIT};
      atomic_fetch_add(&p->failed, 1);
      cf__future_finish(w->task, &o, &p->sink);
      settled_chunk_release(w->task);
      cf_future_unref(w->task);
    }
    if (w->fd >= 0)
      close(w->fd);
    if (w->pid > 0 && w->pidfd >= 0)
      close(w->pidfd);
    free(w->in);
    memset(w, 0, sizeof *w);
  }
  p->running = 0;
}

static const cf__executor_vtable pp_vt = {.name = "process_pool",
                                          .submit = pp_submit,
                                          .cancel = pp_cancel,
                                          .shutdown = pp_shutdown,
                                          .destroy = pp_destroy,
                                          .stats = pp_stats,
                                          .max_workers = pp_max_workers,
                                          .is_own_thread = pp_is_own_thread,
                                          .forked = pp_forked,
                                          .spin_yields = true};

int cf_process_pool_new(const cf_process_pool_opts *opts, cf_executor **out) {
  if (out != NULL)
    *out = NULL;
  cf_process_pool_opts o = {0};
  if (opts != NULL)
    o = *opts;
  if (out == NULL || o.max_workers < 0 || o.max_tasks_per_child < 0 ||
      o.task_timeout_ns < 0 || (o.initarg == NULL && o.initarg_size > 0))
    return CF_EINVAL;
  /* The two mistakes a code cannot explain get a line on stderr too. */
  if (!init_called) {
    fprintf(stderr, "cfutures: cf_process_pool_new: call "
                    "cf_process_init(argc, argv) first thing in main (the "
                    "workers run this program and stop there)\n");
    return CF_EINVAL;
  }
  if (o.initializer != NULL && cf_task_lookup(o.initializer) == NULL) {
    fprintf(stderr, "cfutures: cf_process_pool_new: no task is registered "
                    "as '%s' (the initializer)\n",
            o.initializer);
    return CF_EINVAL;
  }
  if (o.max_workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o.max_workers = n > 0 ? (int)n : 1;
  }
  pool *p = cf__calloc(1, sizeof *p);
  if (p == NULL)
    return CF_ENOMEM;
  p->o = o;
  p->nw = o.max_workers;
  p->sink.fn = report_callback_error;
  p->sink.failed = &p->callbacks_failed;
  p->w = calloc((size_t)p->nw, sizeof *p->w);
  p->initname = o.initializer ? strdup(o.initializer) : NULL;
  p->initarg = o.initarg_size ? malloc(o.initarg_size) : NULL;
  p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->w == NULL || (o.initializer && !p->initname) ||
      (o.initarg_size && !p->initarg) || p->efd < 0) {
    free(p->w);
    free(p->initname);
    free(p->initarg);
    if (p->efd >= 0)
      close(p->efd);
    free(p);
    return CF_ENOMEM;
  }
  if (o.initarg_size)
    memcpy(p->initarg, o.initarg, o.initarg_size);
  p->o.initializer = p->initname;
  p->o.initarg = p->initarg;
  for (int i = 0; i < p->nw; i++)
    p->w[i].fd = -1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca; /* shutdown's deadline is on cf_now_ns's clock */
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  cf__executor_init(&p->base, &pp_vt);
  int rc = pthread_create(&p->mgr, NULL, manager, p);
  if (rc != 0) { /* nothing runs: the base frees it as any executor */
    p->mgr_done = p->mgr_joined = true;
    p->mgr = (pthread_t)0;
    cf_executor_free(&p->base);
    return -rc;
  }
  *out = &p->base;
  return 0;
}
