/* test_error.c - error codes, time helpers, values. */
#include <string.h>

#include "support.h"

CF_TEST(library_codes_have_names_and_messages) {
  (void)state;
  const int codes[] = {CF_EBROKEN, CF_ESHUTDOWN, CF_EINVALSTATE, CF_ETASK,
                       CF_EFORKED};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_true(codes[i] <= -3000 && codes[i] > -3100);
    assert_int_equal(strncmp(cf_err_name(codes[i]), "CF_E", 4), 0);
    assert_string_not_equal(cf_strerror(codes[i]), "unknown error");
  }
  assert_string_equal(cf_err_name(CF_EBROKEN), "CF_EBROKEN");
}

/* The conditions POSIX names are its codes, as in libuv, and read as what
 * they mean here. */
CF_TEST(library_conditions_with_an_errno_are_that_errno) {
  (void)state;
  assert_int_equal(CF_ETIMEDOUT, -ETIMEDOUT);
  assert_int_equal(CF_ECANCELED, -ECANCELED);
  assert_int_equal(CF_EDEADLK, -EDEADLK);
  assert_string_equal(cf_err_name(CF_ETIMEDOUT), "ETIMEDOUT");
  assert_string_equal(cf_err_name(CF_ECANCELED), "ECANCELED");
  assert_string_equal(cf_err_name(CF_EDEADLK), "EDEADLK");
  assert_string_equal(cf_strerror(CF_ETIMEDOUT), "timed out");
  assert_string_equal(cf_strerror(CF_ECANCELED), "cancelled");
  assert_string_equal(cf_strerror(CF_EDEADLK), "waiting here would deadlock");
}

CF_TEST(system_codes_pass_through) {
  (void)state;
  assert_int_equal(CF_EINVAL, -EINVAL);
  assert_int_equal(CF_EAGAIN, -EAGAIN);
  assert_string_equal(cf_err_name(-EINVAL), "EINVAL");
  assert_string_equal(cf_err_name(-ENOENT), "ENOENT");
  assert_string_equal(cf_strerror(-ENOENT), "No such file or directory");
  assert_string_equal(cf_err_name(0), "OK");
  assert_string_equal(cf_strerror(0), "success");
}

CF_TEST(unknown_codes_are_safe) {
  (void)state;
  const int codes[] = {12345, -99999, -3099, INT32_MIN, INT32_MAX, 1};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_non_null(cf_strerror(codes[i]));
    assert_non_null(cf_err_name(codes[i]));
  }
  assert_string_equal(cf_err_name(-99999), "UNKNOWN");
  assert_string_equal(cf_strerror(12345), "unknown error");
}

CF_TEST(deadlines) {
  (void)state;
  assert_true(cf_deadline_after(CF_FOREVER) == CF_FOREVER);
  assert_true(cf_deadline_after(CF_FOREVER - 1) == CF_FOREVER);
  int64_t a = cf_now_ns();
  int64_t d = cf_deadline_after(CF_SEC(1));
  int64_t b = cf_now_ns();
  assert_true(b >= a);
  assert_true(d >= a + CF_SEC(1) && d <= b + CF_SEC(1));
  assert_true(cf_deadline_after(0) <= cf_now_ns());
  assert_true(CF_MSEC(3) == 3000000 && CF_USEC(2) == 2000 &&
              CF_SEC(1) == 1000000000);
}

CF_TEST(value_release_runs_dtor_once) {
  (void)state;
  cf_value v = CF_VALUE_INIT;
  v.u.ptr = &v;
  v.dtor = counting_dtor;
  cf_value_release(&v);
  cf_value_release(&v);
  cf_value_release(NULL);
  assert_int_equal(atomic_load(&dtor_calls), 1);
  assert_null(v.u.ptr);
  assert_null(v.dtor);
}

CF_TEST_MAIN()
