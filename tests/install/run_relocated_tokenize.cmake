# A relocated install works with the source tree gone: installs the build tree
# into a prefix outside the source tree, moves the prefix, then runs
# `<moved>/bin/staticgrad tokenize` (no --tokenizer: it must find the vendored
# tokenizer relative to itself) and compares its ids with Hugging Face
# `tokenizers`' (tests/fixtures/tokenizer). Where mount namespaces are
# available (unshare -m, as root), the source tree is hidden under an empty
# tmpfs while the tool runs, so a path into it cannot be what made it work.
# Arguments: -DBUILD=<build dir> -DSRC=<repo root>
string(RANDOM LENGTH 8 tag)
set(WORK /tmp/staticgrad-relocated-${tag})
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${WORK}/prefix RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed")
endif()
file(RENAME ${WORK}/prefix ${WORK}/moved)
set(fx ${SRC}/tests/fixtures/tokenizer)
file(COPY ${fx}/cli_input.jsonl ${fx}/cli_expected_ids.jsonl DESTINATION ${WORK})
set(cmd ${WORK}/moved/bin/staticgrad tokenize --jsonl ${WORK}/cli_input.jsonl)
execute_process(COMMAND unshare -m sh -c "mount -t tmpfs none '${SRC}' && test ! -e '${SRC}/data' && exec \"$0\" \"$@\"" ${cmd}
                OUTPUT_FILE ${WORK}/ids.jsonl ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0)
  message(STATUS "ran with ${SRC} hidden under an empty tmpfs")
else()
  message(STATUS "unshare -m not available here (${err}); running the moved install without hiding the source tree")
  execute_process(COMMAND ${cmd} OUTPUT_FILE ${WORK}/ids.jsonl ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the relocated staticgrad tokenize failed (${rc}): ${err}")
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/ids.jsonl ${WORK}/cli_expected_ids.jsonl RESULT_VARIABLE diff)
if(NOT diff EQUAL 0)
  message(FATAL_ERROR "the relocated staticgrad tokenize: ${WORK}/ids.jsonl differs from the Hugging Face ids")
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "relocated install: tokenize found its vendored tokenizer")
