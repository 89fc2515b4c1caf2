# Builds and runs the consumer project (a user's program) against multiproc, as MODE says:
#   package       installs the build tree into a scratch prefix, then find_package(multiproc)
#   subdirectory  add_subdirectory() of the source tree
#   pkg-config    installs, then compiles main.cpp with `pkg-config --cflags --libs multiproc`
# Prints the consumer's output; fails if any step does.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

if(NOT MODE STREQUAL "subdirectory")
  run_step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --config ${CONFIG})
endif()

if(MODE STREQUAL "pkg-config")
  set(ENV{PKG_CONFIG_PATH} "${prefix}/lib/pkgconfig:${prefix}/lib/x86_64-linux-gnu/pkgconfig")
  run_step("pkg-config" pkg-config --cflags --libs multiproc)
  string(STRIP "${step_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  file(MAKE_DIRECTORY ${WORK_DIR}/build)
  run_step("compiling with pkg-config's flags" ${CXX} ${SOURCE_DIR}/main.cpp ${flags}
           -o ${WORK_DIR}/build/consumer)
else()
  run_step("configuring the consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build
           -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=${CONFIG} -DCMAKE_CXX_COMPILER=${CXX}
           -DMULTIPROC_CONSUMER_MODE=${MODE} -DMULTIPROC_SOURCE_DIR=${MULTIPROC_SOURCE_DIR})
  run_step("building the consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
endif()
run_step("the consumer" ${WORK_DIR}/build/consumer)
message("${step_output}")
