# Test helpers. MPI tests run under mpiexec; OpenMPI needs --oversubscribe to place more ranks than
# cores, and the two ALLOW_RUN_AS_ROOT variables when CI runs as root.
set(OPENVID_MPIEXEC_FLAGS "--oversubscribe" CACHE STRING "Extra mpiexec flags for the MPI tests")
set(OPENVID_TEST_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")

# add_mpi_test(<name> <target> <np> [args...]): runs <target> on <np> ranks as test <name>_np<np>.
function(add_mpi_test name target np)
  separate_arguments(_flags UNIX_COMMAND "${OPENVID_MPIEXEC_FLAGS}")
  add_test(NAME ${name}_np${np}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${_flags} ${MPIEXEC_PREFLAGS}
                   $<TARGET_FILE:${target}> ${MPIEXEC_POSTFLAGS} ${ARGN})
  set_tests_properties(${name}_np${np} PROPERTIES TIMEOUT 300 PROCESSORS ${np} ENVIRONMENT "${OPENVID_TEST_ENV}")
endfunction()

# The test suites share one precompiled header (cmake/openvid_pch.h), built once by this stub target
# with the suites' own flags.
function(openvid_test_target target)
  target_link_libraries(${target} PRIVATE openvid::core Boost::unit_test_framework)
  target_compile_definitions(${target} PRIVATE BOOST_TEST_DYN_LINK)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  openvid_warnings(${target})
endfunction()
if(OPENVID_PCH)
  add_library(openvid_test_pch OBJECT ${PROJECT_SOURCE_DIR}/tests/pch_stub.cpp)
  openvid_test_target(openvid_test_pch)
  openvid_precompiled_header(openvid_test_pch)
endif()

# add_boost_test(<target> [LIGHT] <sources...>): a Boost.Test executable linked with openvid. LIGHT suites
# (no LibTorch beyond tensors) skip the precompiled header, which costs them more to load than it saves.
function(add_boost_test target)
  set(_light FALSE)
  if(ARGV1 STREQUAL "LIGHT")
    set(_light TRUE)
    list(REMOVE_AT ARGN 0)
  endif()
  add_executable(${target} ${ARGN})
  openvid_test_target(${target})
  if(OPENVID_PCH AND NOT _light)
    target_precompile_headers(${target} REUSE_FROM openvid_test_pch)
  endif()
endfunction()

# add_exit_test(<name> ARGS...): runs tests/expect_exit.sh with ARGS (exit code, time limit, expected
# output, then the command).
function(add_exit_test name)
  add_test(NAME ${name} COMMAND bash ${PROJECT_SOURCE_DIR}/tests/expect_exit.sh ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 ENVIRONMENT "${OPENVID_TEST_ENV}")
endfunction()
