# Runs PROG (with ARGS, a ;-list) and fails unless its stdout equals the
# file EXPECTED byte for byte and it exits 0. Used by the app tests.
execute_process(COMMAND ${PROG} ${ARGS} OUTPUT_VARIABLE out
                RESULT_VARIABLE rc)
file(READ ${EXPECTED} want)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROG} exited with ${rc}")
endif()
if(NOT out STREQUAL want)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/actual.txt "${out}")
  message(FATAL_ERROR "${PROG}: output differs from ${EXPECTED}\n--- got:\n${out}")
endif()
