# `cmake --install` and `cpack` (a .deb). Included at the end of the top-level CMakeLists.txt.

include(GNUInstallDirs)

# The man page and the bash completion are written by the built binary from its own command
# definitions (`tether man`, `tether completion bash`), so they cannot drift from its flags.
# Each link of tether writes them again: they are never older than the binary beside them.
set(TETHER_DOCS_DIR ${CMAKE_BINARY_DIR}/packaging)
add_custom_command(
  TARGET tether POST_BUILD
  COMMAND ${CMAKE_COMMAND} -DTETHER=$<TARGET_FILE:tether> -DOUT_DIR=${TETHER_DOCS_DIR}
          -P ${CMAKE_SOURCE_DIR}/packaging/generate-docs.cmake
  BYPRODUCTS ${TETHER_DOCS_DIR}/tether.1 ${TETHER_DOCS_DIR}/tether.bash-completion
  COMMENT "Writing tether.1 and the bash completion from tether's command definitions"
  VERBATIM)

install(TARGETS tether RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${TETHER_DOCS_DIR}/tether.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${TETHER_DOCS_DIR}/tether.bash-completion
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME tether)
install(FILES README.md SECURITY.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs DESTINATION ${CMAKE_INSTALL_DOCDIR})  # README's links stay valid
# systemd units go in packaging/systemd/ (tether-agent.service); each one there is installed.
file(GLOB TETHER_SYSTEMD_UNITS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/packaging/systemd/*.service
     ${CMAKE_SOURCE_DIR}/packaging/systemd/*.socket ${CMAKE_SOURCE_DIR}/packaging/systemd/*.timer)
if(TETHER_SYSTEMD_UNITS)
  install(FILES ${TETHER_SYSTEMD_UNITS} DESTINATION lib/systemd/system)
endif()

# cpack -G DEB (the default generator here): tether_VERSION_ARCH.deb, installing under /usr,
# its Depends line computed by dpkg-shlibdeps (package dpkg-dev) from the libraries the
# binary links.
set(TETHER_PACKAGE_MAINTAINER "tether maintainers <tether@example.invalid>"
    CACHE STRING "The Maintainer field of the .deb")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tether)
set(CPACK_PACKAGE_VENDOR tether)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "secure tunnels to TCP and UDP ports on remote devices")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "tether opens secure tunnels from a machine to TCP and UDP ports on remote devices, such "
  "as cellular or IoT devices on a private network a server can reach. One binary is the "
  "server (tether server), the client (tether connect, tether up), which listens on "
  "local ports and carries every connection as a stream of one TLS or SSH session, and "
  "the agent (tether agent) for devices that dial out to their server.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${TETHER_PACKAGE_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "bash-completion")
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "__pycache__")
include(CPack)
