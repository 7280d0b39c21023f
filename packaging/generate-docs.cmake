# Runs the built binary to write its man page and bash completion (cmake -P, the step after
# each link of tether in packaging/package.cmake). A script rather than a shell redirect, so
# that a failing command fails the build instead of leaving a truncated file behind.
#   cmake -DTETHER=path/to/tether -DOUT_DIR=dir -P generate-docs.cmake
file(MAKE_DIRECTORY ${OUT_DIR})
foreach(doc IN ITEMS "tether.1;man" "tether.bash-completion;completion;bash")
  list(POP_FRONT doc file)
  execute_process(COMMAND ${TETHER} ${doc}
                  OUTPUT_FILE ${OUT_DIR}/${file}.part
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    file(REMOVE ${OUT_DIR}/${file}.part)
    list(JOIN doc " " args)
    message(FATAL_ERROR "`tether ${args}` failed (${status})")
  endif()
  file(RENAME ${OUT_DIR}/${file}.part ${OUT_DIR}/${file})
endforeach()
