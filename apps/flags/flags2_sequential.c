/*
 * flags2_sequential - the seeds' flags2_sequential.py: flags downloaded
 * one at a time, with the flags2 command line, a progress bar, and
 * NOT_FOUND / ERROR accounting.
 *
 *   flags2_sequential [-h] [-a] [-e] [-l N] [-m CONCURRENT] [-s LABEL] [-v]
 *                     [CC ...]
 *
 * Ctrl-C aborts the request in flight, ends the loop (the seed's
 * `except KeyboardInterrupt: break`) and still prints the final report.
 */
#include "flags_common.h"

#include <stdlib.h>

enum { DEFAULT_CONCUR_REQ = 1, MAX_CONCUR_REQ = 1 };

static void download_many(const flags2_args *a, dl_counter *counter) {
  cf_http_client *client;
  if (cf_http_client_new(0, &client) != 0) {
    fprintf(stderr, "cannot make an HTTP client\n");
    return;
  }
  progress bar;
  if (!a->verbose)
    progress_start(&bar, (long)a->ncc);
  for (size_t i = 0; i < a->ncc; i++) {
    if (atomic_load(&flags_interrupted))
      break;
    char error_msg[600] = "";
    int status =
        flags2_download_one(client, a->cc[i], a->base_url, a->verbose,
                            i < a->nunique, error_msg, sizeof error_msg);
    if (status < 0 && atomic_load(&flags_interrupted))
      break; /* KeyboardInterrupt */
    if (status < 0)
      status = DL_ERROR;
    counter->n[status]++;
    if (a->verbose && error_msg[0])
      printf("%s error: %s\n", a->cc[i], error_msg);
    if (!a->verbose)
      progress_update(&bar, 1);
  }
  if (!a->verbose)
    progress_close(&bar);
  cf_http_client_free(client);
}

int main(int argc, char **argv) {
  flags_interrupt_start(NULL, NULL);
  flags2_args a;
  flags2_process_args(argc, argv, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ, &a);
  flags2_initial_report(&a);
  if (flags_make_dest_dir() != 0)
    return 1;
  int64_t t0 = cf_now_ns();
  dl_counter counter = {{0}};
  download_many(&a, &counter);
  flags2_final_report(&counter, t0);
  flags_interrupt_stop();
  free(a.cc);
  return 0;
}
