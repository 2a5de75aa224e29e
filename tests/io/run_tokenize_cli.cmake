# Runs the built `staticgrad tokenize` on tests/fixtures/tokenizer/cli_input.jsonl
# and compares with the ids and decoded text Hugging Face `tokenizers` gives
# (written by scripts/make_tokenizer_fixture.py).
# Arguments: -DTOOL=<staticgrad> -DSRC=<repo root> -DWORK=<scratch dir>
set(fx ${SRC}/tests/fixtures/tokenizer)
foreach(mode encode decode)
  if(mode STREQUAL "encode")
    set(args tokenize --tokenizer ${SRC}/data/qwen2-tokenizer --jsonl ${fx}/cli_input.jsonl)
    set(expected ${fx}/cli_expected_ids.jsonl)
  else()
    set(args tokenize --decode --tokenizer ${SRC}/data/qwen2-tokenizer/tokenizer.json.gz --jsonl ${fx}/cli_expected_ids.jsonl)
    set(expected ${fx}/cli_expected_decoded.jsonl)
  endif()
  execute_process(COMMAND ${TOOL} ${args} OUTPUT_FILE ${WORK}/cli_tokenize_${mode}.jsonl
                  ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "staticgrad tokenize (${mode}) failed (${rc}): ${err}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/cli_tokenize_${mode}.jsonl ${expected}
                  RESULT_VARIABLE diff)
  if(NOT diff EQUAL 0)
    message(FATAL_ERROR "staticgrad tokenize (${mode}): ${WORK}/cli_tokenize_${mode}.jsonl differs from ${expected}")
  endif()
endforeach()
# A bad line must fail with the file and line named.
file(WRITE ${WORK}/cli_tokenize_bad.jsonl "\"fine\"\n{\"not\": \"a string\"}\n")
execute_process(COMMAND ${TOOL} tokenize --jsonl ${WORK}/cli_tokenize_bad.jsonl
                OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0 OR NOT err MATCHES "cli_tokenize_bad.jsonl:2")
  message(FATAL_ERROR "expected an error naming line 2, got rc=${rc}: ${err}")
endif()
# --stats runs the data pipeline and reports its counts, a skipped bad line included.
file(WRITE ${WORK}/cli_tokenize_data.jsonl
  "{\"text\": \"one two three\"}\nnot json\n{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n")
execute_process(COMMAND ${TOOL} tokenize --stats --skip-bad-lines --max-len 8 --jsonl ${WORK}/cli_tokenize_data.jsonl
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\"bad_lines_skipped\": 1" OR NOT out MATCHES "\"truncated\": 1"
   OR NOT out MATCHES "\"examples_used\": 2")
  message(FATAL_ERROR "tokenize --stats: rc=${rc}: ${out} ${err}")
endif()
