# The Debian package libmultiproc-dev: the headers, the static library, the CMake package files
# and the pkg-config file, i.e. what `cmake --install` puts in the prefix. Included at the end of
# the top-level CMakeLists.txt; does nothing unless MULTIPROC_INSTALL is on and multiproc is the
# top-level project (a parent project that vendors multiproc keeps its own CPack settings).
# Build the package in a build tree with `cpack -G DEB` (scripts/package-test.sh builds,
# installs, uses and removes it).
#
# Configure with -DCMAKE_INSTALL_PREFIX=/usr so that GNUInstallDirs picks Debian's multiarch
# library directory (lib/x86_64-linux-gnu) and the package installs there; with another prefix
# the files go to /usr/lib, which CMake and pkg-config search as well.
# -DCMAKE_POSITION_INDEPENDENT_CODE=ON lets users link the static library into shared ones.

if(NOT MULTIPROC_INSTALL OR NOT PROJECT_IS_TOP_LEVEL)
  return()
endif()

set(MULTIPROC_DEB_MAINTAINER
    "multiproc maintainers <maintainers@users.noreply.r-seed-09d1206d.example>"
    CACHE STRING "The Maintainer field of the Debian package")

# Debian wants the licence as /usr/share/doc/<package>/copyright.
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libmultiproc-dev
        RENAME copyright)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME libmultiproc-dev)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "multiproc")
set(CPACK_PACKAGE_CONTACT "${MULTIPROC_DEB_MAINTAINER}")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)

set(CPACK_DEBIAN_PACKAGE_NAME libmultiproc-dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # libmultiproc-dev_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${MULTIPROC_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The public headers include cereal's; the library itself is static, so nothing else is needed
# at run time (libstdc++ and libc come with any C++ compiler).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libcereal-dev (>= 1.3)")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "cmake (>= 3.25), pkg-config")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
# The synopsis, then the extended description (CPack indents it as Debian wants).
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION} - development files")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "multiproc runs a C++ function in another process (mp::process) or spreads calls
over a pool of worker processes (mp::pool), as Python's multiprocessing does:
start methods fork and spawn, arguments and results serialised with cereal, a
worker that dies fails only its task. This package has the headers, the static
library, the CMake package (find_package(multiproc), target multiproc::multiproc)
and the pkg-config file (multiproc.pc). C++20.")

# `make package_source` / `cpack --config CPackSourceConfig.cmake`: the tree without builds.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/out/" "/\\\\.cache/")

include(CPack)
