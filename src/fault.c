/* fault.c - see fault.h. */
#include "fault.h"
#include "fork.h"

#include <pthread.h>
#include <time.h>

_Atomic int cf__fault_armed;
_Atomic int cf__fault_paused;

void cf__fault_pause(void) {
  atomic_fetch_add(&cf__fault_paused, 1);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  int skip;  /* checks that still pass */
  int count; /* checks that fail after that; < 0: unlimited */
  bool on;
} faults[CF__FAULT_NPOINTS];

void cf__fault_arm(cf__fault_point point, int skip, int count) {
  pthread_mutex_lock(&fault_mu);
  faults[point].skip = skip;
  faults[point].count = count;
  faults[point].on = count != 0;
  int any = 0;
  for (int i = 0; i < CF__FAULT_NPOINTS; i++)
    any |= faults[i].on;
  atomic_store(&cf__fault_armed, any);
  pthread_mutex_unlock(&fault_mu);
}

bool cf__fault_check(cf__fault_point point) {
  bool fail = false;
  pthread_mutex_lock(&fault_mu);
  if (faults[point].on) {
    if (faults[point].skip > 0) {
      faults[point].skip--;
    } else {
      fail = true;
      if (faults[point].count > 0 && --faults[point].count == 0)
        faults[point].on = false;
    }
  }
  pthread_mutex_unlock(&fault_mu);
  return fail;
}

void cf__fault_atfork(int phase) {
  if (phase == CF__FORK_PREPARE)
    pthread_mutex_lock(&fault_mu);
  else if (phase == CF__FORK_PARENT)
    pthread_mutex_unlock(&fault_mu);
  else
    pthread_mutex_init(&fault_mu, NULL);
}
