#include "support.h"
CF_TEST(placeholder) { (void)state; }
CF_TEST_MAIN(CF_CASE(placeholder))
