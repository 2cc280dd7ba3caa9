/*
 * cf/cfutures.h - everything in cfutures, in one include.
 *
 * Naming: public functions are cf_<module>_<verb>, types cf_<name>,
 * macros and enum constants CF_*. Every function that can fail returns 0
 * or a negative code (cf/error.h).
 */
#ifndef CF_CFUTURES_H
#define CF_CFUTURES_H

#include "cf/error.h"
#include "cf/executor.h"
#include "cf/future.h"
#include "cf/generator.h"
#include "cf/io.h"
#include "cf/loop.h"
#include "cf/net.h"
#include "cf/process_pool.h"
#include "cf/registry.h"
#include "cf/sync.h"
#include "cf/thread_pool.h"
#include "cf/time.h"

#define CF_VERSION_MAJOR 0
#define CF_VERSION_MINOR 1
#define CF_VERSION_PATCH 0
#define CF_VERSION_STRING "0.1.0"

#endif /* CF_CFUTURES_H */
