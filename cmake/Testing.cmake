enable_testing()

# tm_add_test(NAME SOURCES ... LIBS ...): a GoogleTest binary registered with CTest, labelled "unit".
function(tm_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 300)
endfunction()

# tm_add_fuzzer(NAME SOURCE LIBS ...): SOURCE defines LLVMFuzzerTestOneInput. With TM_LIBFUZZER it
# links clang's libFuzzer; otherwise it links a replay driver that feeds seeded random and mutated
# inputs for a bounded number of iterations, so every build runs each target as a test.
# tm_add_fuzzer(NAME SOURCE [ITERATIONS N] LIBS ...): ITERATIONS (default 200000) bounds the
# replay driver's run in the test suite; slow targets (whole objects through a YAML parser) take
# fewer.
function(tm_add_fuzzer name source)
  cmake_parse_arguments(ARG "" "ITERATIONS" "LIBS" ${ARGN})
  if(NOT ARG_ITERATIONS)
    set(ARG_ITERATIONS 200000)
  endif()
  if(TM_LIBFUZZER)
    add_executable(${name} ${source})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  else()
    add_executable(${name} ${source} ${CMAKE_SOURCE_DIR}/lib/base/testing/fuzz_driver.cc)
    target_link_libraries(${name} PRIVATE ${ARG_LIBS})
    add_test(NAME ${name} COMMAND ${name} --iterations=${ARG_ITERATIONS})
    set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT 300)
  endif()
endfunction()
