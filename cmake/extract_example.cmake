# Extracts the first ```c block that follows the "<!-- example: NAME -->"
# marker in README.md into OUT, so the README's examples are compiled and
# run. Usage: cmake -DIN=README.md -DNAME=readme_example -DOUT=x.c -P this
file(READ ${IN} text)
set(marker "<!-- example: ${NAME} -->")
string(FIND "${text}" "${marker}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md has no ${marker} marker")
endif()
string(SUBSTRING "${text}" ${pos} -1 text)
string(FIND "${text}" "```c\n" start)
math(EXPR start "${start} + 5")
string(SUBSTRING "${text}" ${start} -1 text)
string(FIND "${text}" "```" end)
string(SUBSTRING "${text}" 0 ${end} code)
file(WRITE ${OUT} "${code}")
