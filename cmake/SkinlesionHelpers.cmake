# Helpers shared by every target of the project.

# Warnings are errors on project code only; imported targets come in as system headers.
set(SKINLESION_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers)

# skinlesion_library(NAME SRCS a.cc ... DEPS x y [TORCH])
# A static library rooted at the repo (includes are "skinlesion/<lib>/<file>.h").
# TORCH links LibTorch and precompiles <torch/torch.h> for the target.
function(skinlesion_library name)
  cmake_parse_arguments(ARG "TORCH" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/proto_gen)
  target_compile_options(${name} PRIVATE ${SKINLESION_WARNINGS})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  if(ARG_TORCH)
    skinlesion_use_torch(${name})
  endif()
  # A project library named as a dependency must exist in this configuration:
  # CMake would otherwise pass it to the linker as -l<name> and fail at link time
  # only (skinlesion_check_internal_deps, called at the end of configuring).
  foreach(dep IN LISTS ARG_DEPS)
    if(dep MATCHES "^skinlesion_")
      set_property(GLOBAL APPEND PROPERTY SKINLESION_INTERNAL_DEPS "${name}:${dep}")
    endif()
  endforeach()
endfunction()

# Fails the configure step when a skinlesion_library names a project library that this
# configuration (full, or the torch-free SKINLESION_FUZZ one) does not define.
function(skinlesion_check_internal_deps)
  get_property(pairs GLOBAL PROPERTY SKINLESION_INTERNAL_DEPS)
  set(missing "")
  foreach(pair IN LISTS pairs)
    string(REPLACE ":" ";" parts "${pair}")
    list(GET parts 0 lib)
    list(GET parts 1 dep)
    if(NOT TARGET ${dep})
      list(APPEND missing "${lib} -> ${dep}")
    endif()
  endforeach()
  if(missing)
    list(JOIN missing ", " text)
    message(FATAL_ERROR "libraries depend on project targets this configuration does not define: ${text}")
  endif()
endfunction()

# One precompiled <torch/torch.h> shared by every LibTorch target (REUSE_FROM):
# compiling it costs about a minute on 2 cores, so once is what the build can afford.
function(skinlesion_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
  if(SKINLESION_PCH)
    if(NOT TARGET skinlesion_torch_pch)
      # Written once: rewriting it on every configure (scripts/run.sh configures
      # again after scripts/test.sh) made Ninja rebuild the PCH's carrier.
      if(NOT EXISTS ${PROJECT_BINARY_DIR}/torch_pch.cc)
        file(WRITE ${PROJECT_BINARY_DIR}/torch_pch.cc "// Carries the shared <torch/torch.h> PCH.\n")
      endif()
      add_library(skinlesion_torch_pch STATIC ${PROJECT_BINARY_DIR}/torch_pch.cc)
      target_compile_options(skinlesion_torch_pch PRIVATE ${SKINLESION_WARNINGS})
      target_link_libraries(skinlesion_torch_pch PUBLIC ${TORCH_LIBRARIES})
      target_include_directories(skinlesion_torch_pch SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
      target_precompile_headers(skinlesion_torch_pch PRIVATE <torch/torch.h>)
    endif()
    target_precompile_headers(${target} REUSE_FROM skinlesion_torch_pch)
  endif()
endfunction()

# skinlesion_test(NAME SRCS a_test.cc DEPS lib [LABELS unit] [TORCH] [TIMEOUT s])
# A GoogleTest binary; each test case is registered with CTest under the labels.
function(skinlesion_test name)
  if(NOT SKINLESION_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "TORCH" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SRCS})
  target_compile_options(${name} PRIVATE ${SKINLESION_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} skinlesion_testing GTest::gtest GTest::gmock GTest::gtest_main)
  if(ARG_TORCH)
    skinlesion_use_torch(${name})
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    TEST_PREFIX "${name}."
    DISCOVERY_TIMEOUT 60
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
               ENVIRONMENT "SKINLESION_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()
