/*
 * flags_common.h - what the seeds' flags.py and flags2_common.py share
 * between the flag downloaders: the country lists, the servers, saving a
 * flag, the command line of the flags2 programs and their reports, the
 * Ctrl-C plumbing, and a tqdm-style progress bar.
 */
#ifndef FLAGS_COMMON_H
#define FLAGS_COMMON_H

#include <cf/cfutures.h>
#include <cf/http.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------------- */
/* flags.py                                                               */

/** The seeds' POP20_CC, in their order. */
extern const char *const POP20_CC[20];

/** The directory flags are saved in ("downloaded", under the current
 * directory, as DEST_DIR). */
#define DEST_DIR "downloaded"

/** The chapter's BASE_URL: the LOCAL server's (see flags_server_url). */
const char *flags_base_url(void);

/** Creates DEST_DIR if missing. 0 or -errno (with a message printed). */
int flags_make_dest_dir(void);

/**
 * Saves img[0..len) as DEST_DIR/filename: written to a temporary name in
 * DEST_DIR, then renamed, so that an interrupted save never leaves a
 * partial flag. 0 or -errno.
 */
int save_flag(const void *img, size_t len, const char *filename);

/** The flag's URL: "{base_url}/{cc}/{cc}.gif", lower-cased (as the seeds'
 * f'...'.lower()). */
void flag_url(char *buf, size_t size, const char *base_url, const char *cc);

/** Sorts codes (2-letter strings) in place. */
void sort_codes(const char **cc, size_t n);

/**
 * flags.py's get_flag: GETs the flag of cc from flags_base_url() with a
 * 6.1 s timeout, following redirects; 0 and the image in r->body, or the
 * cf_http_get code (a status error included: raise_for_status).
 */
int get_flag(cf_http_client *c, const char *cc, cf_http_response *r);

/**
 * flags.py's main(downloader): creates DEST_DIR, times download_many over
 * POP20_CC, prints "\n{count} downloads in {elapsed:.2f}s". The seeds'
 * chapter-one programs have no error handling (an exception ends them);
 * here download_many returns a negative count after printing the error,
 * and main exits with status 1. Returns the exit status.
 */
int flags_main(long (*download_many)(const char *const *cc, size_t n));

/**
 * flags.py's download_one without its print, for tasks on any executor:
 * gets cc's flag and saves it. Returns 0, or the failure's code with its
 * message raised (cf_raise: the task's future carries it).
 */
int flags_fetch_and_save(cf_http_client *c, const char *cc);

/** A pool initializer and finalizer that give each worker thread its own
 * blocking client (the seeds' thread-local session), and the calling
 * worker's client. */
int flags_worker_init(void *arg);
void flags_worker_fini(void *arg);
cf_http_client *flags_worker_client(void);

/** Prints a failed download of cc the way an uncaught exception would
 * end the seeds' program (on stderr). */
void flags_report_failure(const char *cc, int rc, const cf_http_response *r);

/* ---------------------------------------------------------------------- */
/* flags2_common.py                                                       */

typedef enum { DL_OK, DL_NOT_FOUND, DL_ERROR, DL_NSTATUS } download_status;

/** Counter[DownloadStatus]. */
typedef struct dl_counter {
  long n[DL_NSTATUS];
} dl_counter;

/** The parsed command line of a flags2 program. */
typedef struct flags2_args {
  char (*cc)[3];   /* the codes to fetch, sorted, limited (owned) */
  size_t ncc;
  size_t nunique;  /* cc[nunique..] repeat cc[0..nunique) (FLAGS_REPEAT):
                      downloaded again, not saved again */
  long max_req;    /* as given (default: the program's) */
  long actual_req; /* min(max_req, the program's cap, ncc) */
  const char *server_label;
  const char *base_url;
  bool verbose;
} flags2_args;

/**
 * Parses argv as the seeds' argparse parser does (options -h/--help,
 * -a/--all, -e/--every, -l/--limit N, -m/--max_req CONCURRENT,
 * -s/--server LABEL, -v/--verbose, and CC arguments; long options may be
 * abbreviated), with their checks and messages. On a usage error it
 * prints what argparse or the seeds print and exits with status 2; -h
 * prints the help and exits 0. The environment variable FLAGS_REPEAT=K
 * repeats the list K times (for load tests: the seeds' codes stop at
 * 676), and FLAGS_MAX_CONCUR_REQ=N replaces the program's cap on
 * concurrent requests (the seeds' 1000).
 */
void flags2_process_args(int argc, char **argv, long default_concur_req,
                         long max_concur_req, flags2_args *out);

/** initial_report: the site, the codes, the connections. */
void flags2_initial_report(const flags2_args *a);

/** final_report: counts and the elapsed time since t0 (cf_now_ns). */
void flags2_final_report(const dl_counter *c, int64_t t0);

/** The URL of a server label (REMOTE, LOCAL, DELAY, ERROR; the local
 * ports can be moved by FLAGS_LOCAL_PORT, FLAGS_DELAY_PORT and
 * FLAGS_ERROR_PORT), or NULL. */
const char *flags_server_url(const char *label);

/**
 * The seeds' error text for a failed get: "HTTP error 418 - I'm a teapot"
 * for a status error, "MESSAGE (CODE_NAME)" for a request error (httpx's
 * f'{exc} {type(exc)}').
 */
void flags2_error_msg(int rc, const cf_http_response *r, char *buf,
                      size_t size);

/** flags2's get_flag: GET {base_url}/{cc}/{cc}.gif with a 3.1 s timeout,
 * following redirects (cf_http_get's code: 0, CF_EHTTPSTATUS, ...). */
int flags2_get_flag(cf_http_client *c, const char *base_url, const char *cc,
                    cf_http_response *r);

/**
 * flags2_sequential.py's download_one: gets the flag and saves it (OK), or
 * counts a 404 as NOT_FOUND ("not found: URL"); in verbose mode prints
 * "CC OK" or "CC not found: URL". Any other failure is returned as a
 * negative code with the seeds' error text in errbuf (the exception that
 * escapes download_one). save false: a repeat (FLAGS_REPEAT), not saved.
 */
int flags2_download_one(cf_http_client *c, const char *cc,
                        const char *base_url, bool verbose, bool save,
                        char *errbuf, size_t size);

/* ---------------------------------------------------------------------- */
/* Ctrl-C                                                                 */

/** Set once SIGINT or SIGTERM has arrived. */
extern atomic_int flags_interrupted;

/**
 * For the threaded programs: blocks SIGINT and SIGTERM in the calling
 * thread (and so in the threads it creates after this) and starts a
 * thread that waits for them with sigwait; on the first one it sets
 * flags_interrupted and runs on_interrupt(arg) (if non-NULL) on that
 * thread; a second one ends the process (status 130). Call it before
 * creating pools. 0 or a negative code.
 */
int flags_interrupt_start(void (*on_interrupt)(void *arg), void *arg);

/** Stops the sigwait thread (call before freeing what on_interrupt
 * uses). */
void flags_interrupt_stop(void);

/** A cf_http_opts.abort function: flags_interrupted. */
int flags_abort(void *arg);

/* ---------------------------------------------------------------------- */
/* A tqdm-style progress bar                                              */

typedef struct progress {
  FILE *out;
  long n, total;
  int64_t t0, last;
  bool tty;
  int last_len;
} progress;

/** Starts a bar on stderr: "  0%|          | 0/20 [00:00<?, ?it/s]".
 * On a terminal it is redrawn in place; otherwise it prints a line now
 * and then (at most every half second) and at the end. */
void progress_start(progress *p, long total);

/** Counts n more items done. */
void progress_update(progress *p, long n);

/** Draws the final state and ends the line. */
void progress_close(progress *p);

#endif /* FLAGS_COMMON_H */
