/*
 * life.c - the seed's Game of Life driven by generator coroutines
 * (Effective Python, item 40), on cf/generator.h.
 *
 * The same structure as the seed: count_neighbors yields a Query per
 * neighbour and is sent back each neighbour's state, then returns the
 * count; step_cell queries its own state, delegates to count_neighbors
 * (yield from), and yields a Transition; simulate steps every cell and
 * yields TICK after each generation. live_a_generation answers the
 * queries from the current grid and applies the transitions to the next.
 * The output is the seed's, line for line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf/generator.h"

#define ALIVE '*'
#define EMPTY '-'

/* What the coroutines yield: a Query, a Transition or TICK. */
typedef enum { QUERY, TRANSITION, TICK } kind;
typedef struct item {
  kind kind;
  int y, x;
  char state; /* TRANSITION */
} item;

static void die(const char *what, int rc) {
  fprintf(stderr, "life: %s: %s\n", what, cf_strerror(rc));
  exit(1);
}

/* Yields *it (a pointer into the yielding frame: it stays put while the
 * generator is suspended) and returns the state sent back. */
static int yield_item(cf_gen *g, item *it, char *sent) {
  cf_value v = {.u.ptr = it}, in;
  int rc = cf_gen_yield(g, &v, &in);
  if (rc == 0 && sent != NULL)
    *sent = (char)in.u.i;
  return rc;
}

static void print_item(const char *label, const item *it) {
  if (it->kind == QUERY)
    printf("%s Query(y=%d, x=%d)\n", label, it->y, it->x);
  else
    printf("%s Transition(y=%d, x=%d, state='%c')\n", label, it->y, it->x,
           it->state);
}

/* ---------------------------------------------------------------------- */
/* The coroutines                                                         */

typedef struct cell {
  int y, x;
} cell;

static int count_neighbors(cf_gen *g, void *arg, cf_value *ret) {
  const cell *c = arg;
  static const int dy[8] = {1, 1, 0, -1, -1, -1, 0, 1};
  static const int dx[8] = {0, 1, 1, 1, 0, -1, -1, -1};
  char states[8];
  for (int i = 0; i < 8; i++) { /* N, NE, E, SE, S, SW, W, NW */
    item q = {QUERY, c->y + dy[i], c->x + dx[i], 0};
    int rc = yield_item(g, &q, &states[i]);
    if (rc != 0)
      return rc;
  }
  int count = 0;
  for (int i = 0; i < 8; i++)
    if (states[i] == ALIVE)
      count++;
  ret->u.i = count;
  return 0;
}

static char game_logic(char state, int neighbors) {
  if (state == ALIVE) {
    if (neighbors < 2)
      return EMPTY;
    else if (neighbors > 3)
      return EMPTY;
  } else {
    if (neighbors == 3)
      return ALIVE;
  }
  return state;
}

static int step_cell(cf_gen *g, void *arg, cf_value *ret) {
  (void)ret;
  const cell *c = arg;
  item me = {QUERY, c->y, c->x, 0};
  char state;
  int rc = yield_item(g, &me, &state);
  if (rc != 0)
    return rc;
  cf_gen *counter;
  cell here = *c;
  if ((rc = cf_gen_new(count_neighbors, &here, NULL, &counter)) != 0)
    return rc;
  cf_value neighbors;
  rc = cf_gen_yield_from(g, counter, &neighbors);
  cf_gen_free(counter);
  if (rc != 0)
    return rc;
  item t = {TRANSITION, c->y, c->x,
            game_logic(state, (int)neighbors.u.i)};
  return yield_item(g, &t, NULL);
}

typedef struct dims {
  int height, width;
} dims;

static int simulate(cf_gen *g, void *arg, cf_value *ret) {
  (void)ret;
  const dims *d = arg;
  for (;;) {
    for (int y = 0; y < d->height; y++) {
      for (int x = 0; x < d->width; x++) {
        cell c = {y, x};
        cf_gen *step;
        int rc = cf_gen_new(step_cell, &c, NULL, &step);
        if (rc != 0)
          return rc;
        rc = cf_gen_yield_from(g, step, NULL);
        cf_gen_free(step);
        if (rc != 0)
          return rc;
      }
    }
    item tick = {TICK, 0, 0, 0};
    int rc = yield_item(g, &tick, NULL);
    if (rc != 0)
      return rc;
  }
}

/* ---------------------------------------------------------------------- */
/* The grid                                                               */

typedef struct grid {
  int height, width;
  char *cells;
} grid;

static grid grid_new(int height, int width) {
  grid gr = {height, width, malloc((size_t)height * (size_t)width)};
  if (gr.cells == NULL)
    die("grid", CF_ENOMEM);
  memset(gr.cells, EMPTY, (size_t)height * (size_t)width);
  return gr;
}

static int wrap(int v, int n) { return ((v % n) + n) % n; }

static char grid_query(const grid *gr, int y, int x) {
  return gr->cells[wrap(y, gr->height) * gr->width + wrap(x, gr->width)];
}

static void grid_assign(grid *gr, int y, int x, char state) {
  gr->cells[wrap(y, gr->height) * gr->width + wrap(x, gr->width)] = state;
}

/* str(grid): every row, each ended by a newline. */
static char *grid_str(const grid *gr) {
  size_t n = (size_t)gr->height * ((size_t)gr->width + 1);
  char *s = malloc(n + 1);
  if (s == NULL)
    die("grid", CF_ENOMEM);
  char *p = s;
  for (int y = 0; y < gr->height; y++) {
    memcpy(p, &gr->cells[y * gr->width], (size_t)gr->width);
    p += gr->width;
    *p++ = '\n';
  }
  *p = '\0';
  return s;
}

static grid live_a_generation(const grid *gr, cf_gen *sim) {
  grid progeny = grid_new(gr->height, gr->width);
  cf_value v;
  int rc = cf_gen_next(sim, &v);
  for (;;) {
    if (rc != 1)
      die("simulate", rc < 0 ? rc : CF_EINVALSTATE);
    const item *it = v.u.ptr;
    if (it->kind == TICK)
      break;
    if (it->kind == QUERY) {
      cf_value state = {.u.i = grid_query(gr, it->y, it->x)};
      rc = cf_gen_send(sim, &state, &v);
    } else {
      grid_assign(&progeny, it->y, it->x, it->state);
      rc = cf_gen_next(sim, &v);
    }
  }
  return progeny;
}

/* The seed's ColumnPrinter: the grids side by side, numbered. */
typedef struct columns {
  char *data[16];
  int n;
} columns;

/* Line j (0-based) of s, into out (size cap); the last line if j is past
 * it, as Python's splitlines()[j] would not be reached. */
static void line_of(const char *s, int j, char *out, size_t cap) {
  for (int k = 0; k < j && strchr(s, '\n') != NULL; k++)
    s = strchr(s, '\n') + 1;
  size_t len = strcspn(s, "\n");
  if (len >= cap)
    len = cap - 1;
  memcpy(out, s, len);
  out[len] = '\0';
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s != '\0'; s++)
    if (*s == '\n')
      n++;
  return n;
}

static void columns_print(const columns *c) {
  int row_count = 1;
  for (int i = 0; i < c->n; i++)
    if (count_lines(c->data[i]) + 1 > row_count)
      row_count = count_lines(c->data[i]) + 1;
  for (int j = 0; j < row_count; j++) {
    char row[4096];
    size_t len = 0;
    for (int i = 0; i < c->n; i++) {
      char line[256];
      line_of(c->data[i], j > 0 ? j - 1 : 0, line, sizeof line);
      if (j == 0) {
        int pad = (int)strlen(line) / 2;
        len += (size_t)snprintf(row + len, sizeof row - len, "%*s%d%*s", pad,
                                "", i, pad, "");
      } else {
        len += (size_t)snprintf(row + len, sizeof row - len, "%s", line);
      }
      if (len >= sizeof row) /* cut: each call gets only the room left */
        len = sizeof row - 1;
      if (i + 1 < c->n)
        len += (size_t)snprintf(row + len, sizeof row - len, " | ");
      if (len >= sizeof row)
        len = sizeof row - 1;
    }
    /* The seed shows its rows without the trailing padding. */
    while (len > 0 && row[len - 1] == ' ')
      len--;
    row[len] = '\0';
    puts(row);
  }
}

/* ---------------------------------------------------------------------- */

static const char *const ordinals[8] = {"First", "Second", "Third",
                                        "Fourth", "Fifth", "Sixth",
                                        "Seven", "Eighth"};

int main(void) {
  cf_value v, in;
  cf_gen *it;
  int rc;

  /* count_neighbors on its own. */
  cell c = {10, 5};
  if ((rc = cf_gen_new(count_neighbors, &c, NULL, &it)) != 0)
    die("count_neighbors", rc);
  const char sends[8] = {0, ALIVE, ALIVE, EMPTY, EMPTY, EMPTY, EMPTY, EMPTY};
  for (int i = 0; i < 8; i++) {
    in.u.i = sends[i];
    in.size = 0;
    in.dtor = NULL;
    in.type = NULL;
    rc = i == 0 ? cf_gen_next(it, &v) : cf_gen_send(it, &in, &v);
    if (rc != 1)
      die("count_neighbors", rc < 0 ? rc : CF_EINVALSTATE);
    char label[32];
    snprintf(label, sizeof label, "%s yield: ", ordinals[i]);
    print_item(label, v.u.ptr);
  }
  in.u.i = EMPTY;
  if (cf_gen_send(it, &in, &v) == 0)
    printf("Count:  %lld\n", (long long)cf_gen_get_return(it)->u.i);
  cf_gen_free(it);

  /* step_cell on its own. */
  if ((rc = cf_gen_new(step_cell, &c, NULL, &it)) != 0)
    die("step_cell", rc);
  cf_gen_next(it, &v);
  print_item("Me:      ", v.u.ptr);
  in.u.i = ALIVE;
  cf_gen_send(it, &in, &v);
  print_item("Q1       ", v.u.ptr);
  puts("...");
  const char rest[8] = {ALIVE, ALIVE, ALIVE, ALIVE, EMPTY, EMPTY, EMPTY,
                        EMPTY};
  for (int i = 0; i < 8; i++) {
    in.u.i = rest[i];
    cf_gen_send(it, &in, &v);
  }
  print_item("Outcome: ", v.u.ptr);
  cf_gen_free(it);

  /* The glider, five generations. */
  grid gr = grid_new(5, 9);
  grid_assign(&gr, 0, 3, ALIVE);
  grid_assign(&gr, 1, 4, ALIVE);
  grid_assign(&gr, 2, 2, ALIVE);
  grid_assign(&gr, 2, 3, ALIVE);
  grid_assign(&gr, 2, 4, ALIVE);
  char *s = grid_str(&gr);
  printf("%s\n", s);
  free(s);

  columns cols = {.n = 0};
  dims d = {gr.height, gr.width};
  cf_gen *sim;
  if ((rc = cf_gen_new(simulate, &d, NULL, &sim)) != 0)
    die("simulate", rc);
  for (int i = 0; i < 5; i++) {
    printf("round %d\n", i);
    cols.data[cols.n++] = grid_str(&gr);
    grid next = live_a_generation(&gr, sim);
    free(gr.cells);
    gr = next;
  }
  columns_print(&cols);
  for (int i = 0; i < cols.n; i++)
    free(cols.data[i]);
  cf_gen_free(sim);
  free(gr.cells);
  return 0;
}
