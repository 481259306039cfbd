# Test registration: GoogleTest binaries (one CTest per test case), fuzz targets, and the aggregate
# targets the CI legs build (scripts/test.sh): tm_unit_tests, tm_fuzz_targets, tm_threaded_tests.
enable_testing()
include(GoogleTest)

add_custom_target(tm_unit_tests)
add_custom_target(tm_fuzz_targets)
add_custom_target(tm_threaded_tests)

# tm_add_test(NAME SOURCES ... LIBS ... [LABELS ...]): a GoogleTest binary. Each test case becomes
# its own CTest named NAME.Suite.Case (so a failure names the case), labelled "unit" plus LABELS:
#   threaded  its threads are ours: the tsan leg builds it and runs it under ThreadSanitizer. Leave
#             out tests whose threads live in gRPC or cpprestsdk (built without TSAN, they show
#             false races inside those libraries). absl::Mutex is made visible to TSAN by
#             lib/base/testing/tsan_absl_mutex.cc, linked into every test of that leg.
#   netns     needs root: creates network namespaces and TUN devices.
# Cases are listed when ctest runs (PRE_TEST), so building stays as fast as before; a binary not
# built in this build dir shows up as NAME_NOT_BUILT, outside every label.
function(tm_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gmock GTest::gtest_main)
  if(TM_TSAN)
    # Debian's abseil is not built with TSAN: tell TSAN about absl::Mutex (see the file).
    target_sources(${name} PRIVATE ${CMAKE_SOURCE_DIR}/lib/base/testing/tsan_absl_mutex.cc)
    target_link_libraries(${name} PRIVATE absl::synchronization ${CMAKE_DL_LIBS})
  endif()
  set(labels unit ${ARG_LABELS})
  add_dependencies(tm_unit_tests ${name})
  if("threaded" IN_LIST labels)
    add_dependencies(tm_threaded_tests ${name})
  endif()
  # gtest_discover_tests (PRE_TEST) flattens a list-valued property, so the labels become one,
  # e.g. "unit-threaded"; ctest -L matches a regex, so -L unit and -L threaded both select it.
  string(JOIN "-" labels ${labels})
  gtest_discover_tests(${name}
    TEST_PREFIX "${name}."
    DISCOVERY_MODE PRE_TEST
    # Listing under a sanitizer on a busy 2-core machine can take a few seconds.
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${labels}" TIMEOUT 300)
endfunction()

# tm_add_fuzzer(NAME SOURCE [ITERATIONS N] LIBS ...): SOURCE defines LLVMFuzzerTestOneInput. With
# TM_LIBFUZZER it links clang's libFuzzer; otherwise it links a replay driver that feeds seeded random
# and mutated inputs for a bounded number of iterations, so every build runs each target as a test
# (label "fuzz"). ITERATIONS (default 200000) bounds that run; slow targets (whole objects through a
# YAML parser) take fewer.
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
  add_dependencies(tm_fuzz_targets ${name})
endfunction()
