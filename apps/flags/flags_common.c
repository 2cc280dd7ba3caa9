/*
 * The flag downloaders' common code (flags_common.h): flags.py and
 * flags2_common.py of the seeds, in C.
 */
#define _GNU_SOURCE
#include "flags_common.h"

#include "../args.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const POP20_CC[20] = {"CN", "IN", "US", "ID", "BR", "PK", "NG",
                                  "BD", "RU", "KR", "MX", "PH", "VN", "ET",
                                  "EG", "DE", "IR", "TR", "CD", "FR"};

#define DEFAULT_FLAGS_DIR "/usr/share/flags/countries/16x11"
#define COUNTRY_CODES_FILE "country_codes.txt"

/* ---------------------------------------------------------------------- */
/* Servers                                                                */

static const struct {
  const char *label, *host_url, *port_env;
  int port;
} SERVERS[] = {
    /* sorted by label, as the seeds' ', '.join(sorted(SERVERS)) */
    {"DELAY", "http://localhost", "FLAGS_DELAY_PORT", 8001},
    {"ERROR", "http://localhost", "FLAGS_ERROR_PORT", 8002},
    {"LOCAL", "http://localhost", "FLAGS_LOCAL_PORT", 8000},
    {"REMOTE", "https://www.fluentpython.com/data/flags", NULL, 0},
};
#define NSERVERS (sizeof SERVERS / sizeof SERVERS[0])

/* The URLs, computed once (workers ask concurrently). */
static char server_urls[NSERVERS][128];
static pthread_once_t urls_once = PTHREAD_ONCE_INIT;

static void init_urls(void) {
  for (size_t i = 0; i < NSERVERS; i++) {
    if (SERVERS[i].port_env == NULL) {
      snprintf(server_urls[i], sizeof server_urls[i], "%s", SERVERS[i].host_url);
      continue;
    }
    int port = SERVERS[i].port;
    const char *env = getenv(SERVERS[i].port_env);
    if (env != NULL && *env != '\0') {
      char *end;
      long p = strtol(env, &end, 10);
      if (*end == '\0' && p > 0 && p <= 65535)
        port = (int)p;
    }
    snprintf(server_urls[i], sizeof server_urls[i], "%s:%d/flags",
             SERVERS[i].host_url, port);
  }
}

const char *flags_server_url(const char *label) {
  pthread_once(&urls_once, init_urls);
  for (size_t i = 0; i < NSERVERS; i++)
    if (strcmp(label, SERVERS[i].label) == 0)
      return server_urls[i];
  return NULL;
}

const char *flags_base_url(void) {
  const char *env = getenv("FLAGS_BASE_URL");
  return env != NULL && *env != '\0' ? env : flags_server_url("LOCAL");
}

/* ---------------------------------------------------------------------- */
/* Saving                                                                 */

int flags_make_dest_dir(void) {
  /* The seed's DEST_DIR.mkdir(exist_ok=True): an existing directory is
   * fine, anything else of that name is an error before any download. */
  if (mkdir(DEST_DIR, 0777) == 0)
    return 0;
  int e = errno;
  struct stat st;
  if (e == EEXIST) {
    if (stat(DEST_DIR, &st) != 0)
      e = errno; /* a dangling symlink: ENOENT */
    else if (S_ISDIR(st.st_mode))
      return 0;
    else
      e = ENOTDIR;
  }
  fprintf(stderr, "cannot create %s: %s\n", DEST_DIR, strerror(e));
  return -e;
}

int save_flag(const void *img, size_t len, const char *filename) {
  char final[PATH_MAX], tmp[PATH_MAX];
  static atomic_uint seq;
  snprintf(final, sizeof final, "%s/%s", DEST_DIR, filename);
  snprintf(tmp, sizeof tmp, "%s/.%s.%ld.%u.tmp", DEST_DIR, filename,
           (long)getpid(), atomic_fetch_add(&seq, 1));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  const char *p = img;
  size_t done = 0;
  int rc = 0;
  while (done < len) {
    ssize_t n = write(fd, p + done, len - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    done += (size_t)n;
  }
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, final) != 0)
    rc = -errno;
  if (rc != 0)
    unlink(tmp);
  return rc;
}

void flag_url(char *buf, size_t size, const char *base_url, const char *cc) {
  int n = snprintf(buf, size, "%s/%s/%s.gif", base_url, cc, cc);
  for (int i = 0; i < n && (size_t)i < size; i++)
    if (buf[i] >= 'A' && buf[i] <= 'Z')
      buf[i] = (char)(buf[i] - 'A' + 'a');
}

static int cmp_code(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void sort_codes(const char **cc, size_t n) { qsort(cc, n, sizeof *cc, cmp_code); }

int get_flag(cf_http_client *c, const char *cc, cf_http_response *r) {
  char url[512];
  flag_url(url, sizeof url, flags_base_url(), cc);
  cf_http_opts o = {.timeout_ns = CF_MSEC(6100), .abort = flags_abort};
  return cf_http_get(c, url, &o, r);
}

int flags_fetch_and_save(cf_http_client *c, const char *cc) {
  cf_http_response r = {0};
  int rc = get_flag(c, cc, &r);
  char name[8];
  snprintf(name, sizeof name, "%s.gif", cc);
  if (rc == 0)
    rc = save_flag(r.body, r.body_len, name);
  if (rc != 0)
    rc = cf_raise(rc, "%s: %s", cc, r.error[0] ? r.error : cf_strerror(rc));
  cf_http_response_release(&r);
  return rc;
}

static _Thread_local cf_http_client *worker_client;

int flags_worker_init(void *arg) {
  (void)arg;
  return cf_http_client_new(CF_HTTP_CLIENT_BLOCKING, &worker_client);
}

void flags_worker_fini(void *arg) {
  (void)arg;
  cf_http_client_free(worker_client);
  worker_client = NULL;
}

cf_http_client *flags_worker_client(void) { return worker_client; }

int flags_main(long (*download_many)(const char *const *cc, size_t n)) {
  if (flags_make_dest_dir() != 0)
    return 1;
  int64_t t0 = cf_now_ns();
  long count = download_many(POP20_CC, 20);
  double elapsed = (double)(cf_now_ns() - t0) / 1e9;
  if (count < 0)
    return 1;
  printf("\n%ld downloads in %.2fs\n", count, elapsed);
  return 0;
}

void flags_report_failure(const char *cc, int rc, const cf_http_response *r) {
  fflush(stdout);
  fprintf(stderr, "\n%s: %s (%s)\n", cc,
          r != NULL && r->error[0] ? r->error : cf_strerror(rc),
          cf_err_name(rc));
}

/* ---------------------------------------------------------------------- */
/* The flags2 command line, as argparse                                   */

static const char *prog_name(const char *argv0) {
  const char *s = strrchr(argv0, '/');
  return s ? s + 1 : argv0;
}

static void print_usage(FILE *f, const char *prog) {
  const char *opts = "[-h] [-a] [-e] [-l N] [-m CONCURRENT] [-s LABEL] [-v]";
  size_t lead = strlen("usage: ") + strlen(prog) + 1;
  if (lead + strlen(opts) + strlen(" [CC ...]") <= 78)
    fprintf(f, "usage: %s %s [CC ...]\n", prog, opts);
  else
    fprintf(f, "usage: %s %s\n%*s[CC ...]\n", prog, opts, (int)lead, "");
}

static void print_help(const char *prog, long default_concur_req) {
  print_usage(stdout, prog);
  printf("\nDownload flags for country codes. Default: top 20 countries by "
         "population\n\n"
         "positional arguments:\n"
         "  CC                    country code or 1st letter (eg. B for "
         "BA...BZ)\n\n"
         "options:\n"
         "  -h, --help            show this help message and exit\n"
         "  -a, --all             get all available flags (AD to ZW)\n"
         "  -e, --every           get flags for every possible code (AA ... "
         "AZ)\n"
         "  -l N, --limit N       limit to N first codes\n"
         "  -m CONCURRENT, --max_req CONCURRENT\n"
         "                        maximum concurrent requests (default=%ld)\n"
         "  -s LABEL, --server LABEL\n"
         "                        Server to hit; one of DELAY, ERROR, LOCAL, "
         "REMOTE\n"
         "                        (default=LOCAL)\n"
         "  -v, --verbose         output detailed progress info\n",
         default_concur_req);
}

/* argparse's own errors: usage and message on stderr, status 2. */
static _Noreturn void arg_error(const char *prog, const char *msg) {
  print_usage(stderr, prog);
  fprintf(stderr, "%s: error: %s\n", prog, msg);
  exit(2);
}

/* "argument -l/--limit: MSG" */
static _Noreturn void arg_error_opt(const char *prog, char s, const char *l,
                                    const char *msg) {
  char buf[512];
  snprintf(buf, sizeof buf, "argument -%c/--%s: %s", s, l, msg);
  arg_error(prog, buf);
}

static _Noreturn void arg_unrecognized(const char *prog, const char *a) {
  char buf[512];
  snprintf(buf, sizeof buf, "unrecognized arguments: %s", a);
  arg_error(prog, buf);
}

/* The seeds' own usage errors: message and usage on stdout, status 2. */
static _Noreturn void usage_error(const char *prog, const char *msg) {
  printf("%s\n", msg);
  print_usage(stdout, prog);
  exit(2);
}

typedef struct opt {
  char s;
  const char *l, *metavar; /* metavar NULL: a flag */
} opt;

static const opt OPTS[] = {
    {'h', "help", NULL},      {'a', "all", NULL},
    {'e', "every", NULL},     {'l', "limit", "N"},
    {'m', "max_req", "CONCURRENT"}, {'s', "server", "LABEL"},
    {'v', "verbose", NULL},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

static bool looks_negative_number(const char *s) {
  if (s[0] != '-' || s[1] == '\0')
    return false;
  char *end;
  strtod(s, &end);
  return *end == '\0';
}

static long parse_int_arg(const char *prog, const opt *o, const char *v) {
  char *end;
  errno = 0;
  const char *p = v;
  while (*p == ' ' || *p == '\t')
    p++;
  long x = strtol(p, &end, 10);
  while (*end == ' ' || *end == '\t' || *end == '\n')
    end++;
  if (*p == '\0' || *end != '\0' || errno != 0) {
    char msg[300];
    snprintf(msg, sizeof msg, "invalid int value: '%.200s'", v);
    arg_error_opt(prog, o->s, o->l, msg);
  }
  return x;
}

/* Reads all two-letter codes of country_codes.txt, or, without that file,
 * of the flag directory's names. */
static size_t read_all_codes(char (**out)[3]) {
  size_t n = 0, cap = 256;
  char(*v)[3] = malloc(cap * sizeof *v);
  if (v == NULL)
    return 0;
  FILE *f = fopen(COUNTRY_CODES_FILE, "r");
  if (f != NULL) {
    char w[64];
    while (fscanf(f, "%63s", w) == 1) {
      if (n == cap && (v = realloc(v, (cap *= 2) * sizeof *v)) == NULL)
        break;
      if (strlen(w) != 2)
        continue;
      v[n][0] = w[0];
      v[n][1] = w[1];
      v[n++][2] = '\0';
    }
    fclose(f);
  } else {
    const char *dir = getenv("FLAGS_DIR");
    DIR *d = opendir(dir && *dir ? dir : DEFAULT_FLAGS_DIR);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
      const char *nm = de->d_name;
      if (strlen(nm) == 6 && strcmp(nm + 2, ".gif") == 0 && nm[0] >= 'a' &&
          nm[0] <= 'z' && nm[1] >= 'a' && nm[1] <= 'z') {
        if (n == cap && (v = realloc(v, (cap *= 2) * sizeof *v)) == NULL)
          break;
        v[n][0] = (char)(nm[0] - 'a' + 'A');
        v[n][1] = (char)(nm[1] - 'a' + 'A');
        v[n++][2] = '\0';
      }
    }
    if (d != NULL)
      closedir(d);
  }
  *out = v;
  return v ? n : 0;
}

static int cmp_cc3(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

/* expand_cc_args: a sorted set of codes, cut at limit. */
static size_t expand_cc_args(const char *prog, bool every, bool all,
                             char **ccs, size_t nccs, long limit,
                             char (**out)[3]) {
  char(*v)[3] = NULL;
  size_t n = 0;
  if (every) {
    v = malloc(26 * 26 * sizeof *v);
    for (int a = 0; v && a < 26; a++)
      for (int b = 0; b < 26; b++) {
        v[n][0] = (char)('A' + a);
        v[n][1] = (char)('A' + b);
        v[n++][2] = '\0';
      }
  } else if (all) {
    n = read_all_codes(&v);
  } else {
    v = malloc((nccs * 26 + 20) * sizeof *v); /* room for POP20 too */
    for (size_t i = 0; v && i < nccs; i++) {
      char c[3] = {0};
      size_t len = strlen(ccs[i]);
      bool ok = len == 1 || len == 2;
      for (size_t k = 0; ok && k < len; k++) {
        char ch = ccs[i][k];
        if (ch >= 'a' && ch <= 'z')
          ch = (char)(ch - 'a' + 'A');
        ok = ch >= 'A' && ch <= 'Z';
        c[k] = ch;
      }
      if (!ok) {
        free(v);
        usage_error(prog, "*** Usage error: each CC argument "
                          "must be A to Z or AA to ZZ.");
      }
      if (len == 1)
        for (int b = 0; b < 26; b++) {
          v[n][0] = c[0];
          v[n][1] = (char)('A' + b);
          v[n++][2] = '\0';
        }
      else
        memcpy(v[n++], c, 3);
    }
  }
  if (v == NULL) {
    fprintf(stderr, "%s: out of memory\n", prog);
    exit(1);
  }
  qsort(v, n, sizeof *v, cmp_cc3);
  size_t u = 0; /* a set: drop duplicates */
  for (size_t i = 0; i < n; i++)
    if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
      memcpy(v[u++], v[i], 3);
  if ((long)u > limit)
    u = (size_t)limit;
  *out = v;
  return u;
}

void flags2_process_args(int argc, char **argv, long default_concur_req,
                         long max_concur_req, flags2_args *out) {
  const char *prog = prog_name(argv[0]);
  bool all = false, every = false, verbose = false;
  long limit = LONG_MAX, max_req = default_concur_req;
  const char *server = "LOCAL";
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  size_t npos = 0;
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    const opt *o = NULL;
    const char *val = NULL;
    if (only_pos || a[0] != '-' || a[1] == '\0' || looks_negative_number(a)) {
      pos[npos++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = true;
      continue;
    }
    if (a[1] == '-') { /* --name, --name=value, or a unique prefix */
      char name[64];
      const char *eq = strchr(a, '=');
      size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
      snprintf(name, sizeof name, "%.*s", (int)nl, a + 2);
      int hits = 0;
      for (size_t k = 0; k < NOPTS; k++) {
        if (strcmp(OPTS[k].l, name) == 0) {
          o = &OPTS[k];
          hits = 1;
          break;
        }
        if (strncmp(OPTS[k].l, name, nl) == 0) {
          o = &OPTS[k];
          hits++;
        }
      }
      if (hits == 0 || nl == 0) {
        arg_unrecognized(prog, a);
      } else if (hits > 1) {
        char opts_list[256] = "";
        for (size_t k = 0; k < NOPTS; k++)
          if (strncmp(OPTS[k].l, name, nl) == 0) {
            if (opts_list[0])
              strcat(opts_list, ", ");
            strcat(opts_list, "--");
            strcat(opts_list, OPTS[k].l);
          }
        char msg[400];
        snprintf(msg, sizeof msg, "ambiguous option: %.100s could match %s", a,
                 opts_list);
        arg_error(prog, msg);
      }
      if (eq != NULL) {
        if (o->metavar == NULL) {
          char msg[300];
          snprintf(msg, sizeof msg, "ignored explicit argument '%.200s'",
                   eq + 1);
          arg_error_opt(prog, o->s, o->l, msg);
        }
        val = eq + 1;
      }
    } else { /* -x, -xVALUE, clusters of flags */
      for (size_t j = 1; a[j] != '\0'; j++) {
        o = NULL;
        for (size_t k = 0; k < NOPTS; k++)
          if (OPTS[k].s == a[j])
            o = &OPTS[k];
        if (o == NULL) {
          char bad[3] = {'-', a[j], '\0'};
          arg_unrecognized(prog, j == 1 ? a : bad);
        }
        if (o->metavar != NULL) {
          if (a[j + 1] != '\0')
            val = a[j + 1] == '=' ? a + j + 2 : a + j + 1;
          break;
        }
        if (o->s == 'h') {
          print_help(prog, default_concur_req);
          exit(0);
        }
        if (o->s == 'a')
          all = true;
        else if (o->s == 'e')
          every = true;
        else if (o->s == 'v')
          verbose = true;
        if (a[j + 1] != '\0')
          o = NULL; /* more flags in the cluster */
      }
      if (o == NULL)
        continue;
    }
    if (o->metavar == NULL) {
      if (o->s == 'h') {
        print_help(prog, default_concur_req);
        exit(0);
      }
      if (o->s == 'a')
        all = true;
      else if (o->s == 'e')
        every = true;
      else if (o->s == 'v')
        verbose = true;
      continue;
    }
    if (val == NULL) {
      if (i + 1 >= argc ||
          (argv[i + 1][0] == '-' && argv[i + 1][1] != '\0' &&
           !looks_negative_number(argv[i + 1]))) {
        arg_error_opt(prog, o->s, o->l, "expected one argument");
      }
      val = argv[++i];
    }
    if (o->s == 'l')
      limit = parse_int_arg(prog, o, val);
    else if (o->s == 'm')
      max_req = parse_int_arg(prog, o, val);
    else if (o->s == 's')
      server = val;
  }
  if (max_req < 1)
    usage_error(prog, "*** Usage error: --mx_req CONCURRENT must be >= 1");
  if (limit < 1)
    usage_error(prog, "*** Usage error: --limit N must be >= 1");
  static char label[16];
  snprintf(label, sizeof label, "%s", server);
  for (char *p = label; *p; p++)
    if (*p >= 'a' && *p <= 'z')
      *p = (char)(*p - 'a' + 'A');
  if (strlen(server) >= sizeof label || flags_server_url(label) == NULL)
    usage_error(prog, "*** Usage error: --server LABEL "
                      "must be one of DELAY, ERROR, LOCAL, REMOTE");
  char(*cc)[3];
  size_t ncc = expand_cc_args(prog, every, all, pos, npos, limit, &cc);
  free(pos);
  if (ncc == 0) { /* sorted(POP20_CC)[:limit]; cc has room for 20 */
    const char *p20[20];
    memcpy(p20, POP20_CC, sizeof p20);
    sort_codes(p20, 20);
    ncc = limit < 20 ? (size_t)limit : 20;
    for (size_t i = 0; i < ncc; i++)
      memcpy(cc[i], p20[i], 3);
  }
  /* FLAGS_REPEAT=K (not a seed option, so that the command line stays
   * the seeds'): every code K times, for load tests such as 10,000
   * downloads of the 241 flags. Each is saved once: saving one file
   * 40 times over measures the file system's rename, not the downloads
   * (ext4 serialises them on the directory). */
  out->nunique = ncc;
  const char *rep = getenv("FLAGS_REPEAT");
  long k = 1;
  if (rep != NULL && !arg_long(rep, 1, 1000000, &k)) {
    fprintf(stderr, "%s: FLAGS_REPEAT must be a count from 1 to 1000000: %s\n",
            prog, rep);
    exit(2);
  }
  if (k > 1 && k <= 1000000 && ncc > 0) {
    char(*big)[3] = malloc(ncc * (size_t)k * sizeof *big);
    if (big == NULL) {
      fprintf(stderr, "%s: out of memory\n", prog);
      exit(1);
    }
    for (long r = 0; r < k; r++)
      memcpy(big + (size_t)r * ncc, cc, ncc * sizeof *cc);
    free(cc);
    cc = big;
    ncc *= (size_t)k;
  }
  out->cc = cc;
  out->ncc = ncc;
  out->max_req = max_req;
  /* FLAGS_MAX_CONCUR_REQ raises the program's cap (the seeds' 1000), for
   * load tests such as 10,000 concurrent downloads; the default stays the
   * seeds'. */
  const char *cap = getenv("FLAGS_MAX_CONCUR_REQ");
  if (cap != NULL && !arg_long(cap, 1, 1000000, &max_concur_req)) {
    fprintf(stderr, "%s: FLAGS_MAX_CONCUR_REQ must be a count from 1 to "
                    "1000000: %s\n", prog, cap);
    exit(2);
  }
  long actual = max_req < max_concur_req ? max_req : max_concur_req;
  out->actual_req = actual < (long)ncc ? actual : (long)ncc;
  out->server_label = label;
  out->base_url = flags_server_url(label);
  out->verbose = verbose;
}

void flags2_initial_report(const flags2_args *a) {
  char msg[64];
  if (a->ncc <= 10) {
    size_t o = 0;
    msg[0] = '\0';
    for (size_t i = 0; i < a->ncc; i++)
      o += (size_t)snprintf(msg + o, sizeof msg - o, "%s%s", i ? ", " : "",
                            a->cc[i]);
  } else
    snprintf(msg, sizeof msg, "from %s to %s", a->cc[0], a->cc[a->ncc - 1]);
  printf("%s site: %s\n", a->server_label, a->base_url);
  printf("Searching for %zu flag%s: %s\n", a->ncc, a->ncc != 1 ? "s" : "", msg);
  if (a->actual_req == 1)
    printf("1 connection will be used\n");
  else
    printf("%ld concurrent connections will be used.\n", a->actual_req);
  fflush(stdout);
}

void flags2_final_report(const dl_counter *c, int64_t t0) {
  double elapsed = (double)(cf_now_ns() - t0) / 1e9;
  printf("--------------------\n");
  printf("%3ld flag%s downloaded.\n", c->n[DL_OK], c->n[DL_OK] != 1 ? "s" : "");
  if (c->n[DL_NOT_FOUND])
    printf("%3ld not found.\n", c->n[DL_NOT_FOUND]);
  if (c->n[DL_ERROR])
    printf("%3ld error%s.\n", c->n[DL_ERROR], c->n[DL_ERROR] != 1 ? "s" : "");
  printf("Elapsed time: %.2fs\n", elapsed);
  fflush(stdout);
}

void flags2_error_msg(int rc, const cf_http_response *r, char *buf,
                      size_t size) {
  if (rc == CF_EHTTPSTATUS)
    snprintf(buf, size, "HTTP error %ld - %s", r->status, r->reason);
  else
    snprintf(buf, size, "%s (%s)", r->error[0] ? r->error : cf_strerror(rc),
             cf_err_name(rc));
}

int flags2_get_flag(cf_http_client *c, const char *base_url, const char *cc,
                    cf_http_response *r) {
  char url[512];
  flag_url(url, sizeof url, base_url, cc);
  cf_http_opts o = {.timeout_ns = CF_MSEC(3100), .abort = flags_abort};
  return cf_http_get(c, url, &o, r);
}

int flags2_download_one(cf_http_client *c, const char *cc,
                        const char *base_url, bool verbose, bool save,
                        char *errbuf, size_t size) {
  cf_http_response r = {0};
  int rc = flags2_get_flag(c, base_url, cc, &r);
  int status;
  char msg[600];
  if (rc == CF_EHTTPSTATUS && r.status == 404) {
    status = DL_NOT_FOUND;
    snprintf(msg, sizeof msg, "not found: %s", r.url ? r.url : "?");
  } else if (rc != 0) {
    flags2_error_msg(rc, &r, errbuf, size);
    cf_http_response_release(&r);
    return rc;
  } else {
    char name[8];
    snprintf(name, sizeof name, "%s.gif", cc);
    if (save && (rc = save_flag(r.body, r.body_len, name)) != 0) {
      snprintf(errbuf, size, "cannot save %s: %s", name, cf_strerror(rc));
      cf_http_response_release(&r);
      return rc;
    }
    status = DL_OK;
    snprintf(msg, sizeof msg, "OK");
  }
  cf_http_response_release(&r);
  if (verbose) {
    printf("%s %s\n", cc, msg);
    fflush(stdout);
  }
  return status;
}

/* ---------------------------------------------------------------------- */
/* Ctrl-C                                                                 */

atomic_int flags_interrupted;

static struct {
  pthread_t thread;
  bool running;
  atomic_int stopping;
  void (*fn)(void *);
  void *arg;
  sigset_t set;
} intr;

static void *sigwait_main(void *unused) {
  (void)unused;
  for (;;) {
    int sig = 0;
    if (sigwait(&intr.set, &sig) != 0)
      continue;
    if (atomic_load(&intr.stopping))
      return NULL;
    if (atomic_exchange(&flags_interrupted, 1) != 0)
      _exit(130); /* a second Ctrl-C: the user means it */
    if (intr.fn != NULL)
      intr.fn(intr.arg);
  }
}

int flags_interrupt_start(void (*on_interrupt)(void *arg), void *arg) {
  sigemptyset(&intr.set);
  sigaddset(&intr.set, SIGINT);
  sigaddset(&intr.set, SIGTERM);
  int rc = pthread_sigmask(SIG_BLOCK, &intr.set, NULL);
  if (rc != 0)
    return -rc;
  intr.fn = on_interrupt;
  intr.arg = arg;
  rc = pthread_create(&intr.thread, NULL, sigwait_main, NULL);
  if (rc != 0)
    return -rc;
  intr.running = true;
  return 0;
}

void flags_interrupt_stop(void) {
  if (!intr.running)
    return;
  atomic_store(&intr.stopping, 1);
  pthread_kill(intr.thread, SIGTERM); /* wakes sigwait; blocked: no harm */
  pthread_join(intr.thread, NULL);
  intr.running = false;
}

int flags_abort(void *arg) {
  (void)arg;
  return atomic_load(&flags_interrupted);
}

/* ---------------------------------------------------------------------- */
/* Progress bar                                                           */

static void fmt_clock(char *buf, size_t size, double s) {
  long t = s > 0 && s < 3.6e8 ? (long)s : 0;
  if (t >= 3600)
    snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, size, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(progress *p, bool final) {
  int64_t now = cf_now_ns();
  double el = (double)(now - p->t0) / 1e9;
  char bar[64] = "", e[32], r[32], rate[32];
  const int width = 10;
  double frac = p->total > 0 ? (double)p->n / (double)p->total : 0;
  if (frac > 1)
    frac = 1;
  /* tqdm's blocks: whole cells, then one partial cell, then spaces */
  static const char *const part[8] = {"",       "\u258f", "\u258e", "\u258d",
                                      "\u258c", "\u258b", "\u258a", "\u2589"};
  int eighths = (int)(frac * width * 8);
  int full = eighths / 8;
  size_t o = 0;
  for (int i = 0; i < full; i++)
    o += (size_t)snprintf(bar + o, sizeof bar - o, "\u2588");
  int cells = full;
  if (full < width) {
    o += (size_t)snprintf(bar + o, sizeof bar - o, "%s", part[eighths % 8]);
    cells += eighths % 8 ? 1 : 0;
  }
  for (; cells < width; cells++)
    o += (size_t)snprintf(bar + o, sizeof bar - o, " ");
  fmt_clock(e, sizeof e, el);
  if (p->n > 0 && el > 0) {
    double itps = (double)p->n / el;
    fmt_clock(r, sizeof r, (double)(p->total - p->n) / itps);
    if (itps >= 1)
      snprintf(rate, sizeof rate, "%.2fit/s", itps);
    else
      snprintf(rate, sizeof rate, "%.2fs/it", 1 / itps);
  } else {
    snprintf(r, sizeof r, "?");
    snprintf(rate, sizeof rate, "?it/s");
  }
  char line[256];
  int len = snprintf(line, sizeof line, "%3.0f%%|%s| %ld/%ld [%s<%s, %s]",
                     frac * 100, bar, p->n, p->total, e, r, rate);
  if (p->tty) {
    int pad = p->last_len > len ? p->last_len - len : 0;
    fprintf(p->out, "\r%s%*s", line, pad, "");
    if (final)
      fputc('\n', p->out);
  } else
    fprintf(p->out, "%s\n", line);
  fflush(p->out);
  p->last_len = len;
  p->last = now;
}

void progress_start(progress *p, long total) {
  memset(p, 0, sizeof *p);
  p->out = stderr;
  p->total = total;
  p->tty = isatty(fileno(stderr)) != 0;
  p->t0 = p->last = cf_now_ns();
  draw(p, false);
}

void progress_update(progress *p, long n) {
  p->n += n;
  int64_t every = p->tty ? CF_MSEC(50) : CF_MSEC(500);
  if (p->n < p->total && cf_now_ns() - p->last < every)
    return;
  if (p->n < p->total)
    draw(p, false);
}

void progress_close(progress *p) { draw(p, true); }
