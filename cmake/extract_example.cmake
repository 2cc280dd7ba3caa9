# Extracts the first ```c block that follows the "<!-- example -->" marker
# in README.md into OUT, so the README's example is compiled and run.
file(READ ${IN} text)
string(FIND "${text}" "<!-- example -->" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md has no <!-- example --> marker")
endif()
string(SUBSTRING "${text}" ${pos} -1 text)
string(FIND "${text}" "```c\n" start)
math(EXPR start "${start} + 5")
string(SUBSTRING "${text}" ${start} -1 text)
string(FIND "${text}" "```" end)
string(SUBSTRING "${text}" 0 ${end} code)
file(WRITE ${OUT} "${code}")
