/*
 * flags - the seeds' flags.py: downloads the flags of the 20 most
 * populous countries one after the other, printing each code as it is
 * saved, then the count and the time.
 *
 *   $ flags
 *   BD BR CD CN DE EG ET FR ID IN IR KR MX NG PH PK RU TR US VN
 *   20 downloads in 10.06s
 *
 * The server is the LOCAL one (http://localhost:8000/flags; the port from
 * FLAGS_LOCAL_PORT, or the whole base URL from FLAGS_BASE_URL). One
 * blocking HTTP client, reused (the seeds' httpx calls).
 */
#include "flags_common.h"

#include <stdlib.h>
#include <string.h>

static cf_http_client *client;

static long download_many(const char *const *cc_list, size_t n) {
  const char **cc = malloc(n * sizeof *cc);
  if (cc == NULL)
    return -1;
  memcpy(cc, cc_list, n * sizeof *cc);
  sort_codes(cc, n);
  long count = (long)n;
  for (size_t i = 0; i < n; i++) {
    cf_http_response r = {0};
    int rc = get_flag(client, cc[i], &r);
    char name[8];
    snprintf(name, sizeof name, "%s.gif", cc[i]);
    if (rc == 0)
      rc = save_flag(r.body, r.body_len, name);
    if (rc != 0) {
      flags_report_failure(cc[i], rc, &r);
      cf_http_response_release(&r);
      count = -1;
      break;
    }
    cf_http_response_release(&r);
    printf("%s ", cc[i]); /* one code at a time on one line */
    fflush(stdout);
  }
  free(cc);
  return count;
}

int main(void) {
  /* Ctrl-C aborts the request in flight (no partial file is left). */
  flags_interrupt_start(NULL, NULL);
  if (cf_http_client_new(0, &client) != 0) {
    fprintf(stderr, "flags: cannot make an HTTP client\n");
    return 1;
  }
  int status = flags_main(download_many);
  cf_http_client_free(client);
  flags_interrupt_stop();
  return status;
}
