# Cross-compiles multiproc as 64-bit Windows programs with Debian's mingw-w64 (package
# g++-mingw-w64-x86-64-posix) and runs them under Wine:
#   cmake -S . -B build-mingw -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/mingw-w64.cmake
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(MULTIPROC_MINGW_TRIPLE x86_64-w64-mingw32)
# The -posix flavour: its std::thread, std::mutex and std::condition_variable work (the -win32
# flavour of GCC 12 has none of them).
set(CMAKE_C_COMPILER ${MULTIPROC_MINGW_TRIPLE}-gcc-posix)
set(CMAKE_CXX_COMPILER ${MULTIPROC_MINGW_TRIPLE}-g++-posix)
set(CMAKE_RC_COMPILER ${MULTIPROC_MINGW_TRIPLE}-windres)

set(CMAKE_FIND_ROOT_PATH /usr/${MULTIPROC_MINGW_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Header-only dependencies (cereal) come from the build machine's /usr/include. It is
# searched after MinGW's own headers (-idirafter), so glibc's headers never shadow them, and
# since the compiler then reports it as one of its own directories, CMake drops the
# -isystem /usr/include an imported target would otherwise add in front of MinGW's headers.
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")

# ctest and try_run run the Windows programs through Wine. WINEPREFIX and WINEDEBUG come from
# the environment (scripts/windows-tests.sh sets them). Through Wine's cmd /c rather than
# directly: a program Wine starts from a Unix shell has no Windows parent (its parent id reads
# 0), which no program started on Windows sees; cmd gives it one, and passes its exit code on.
set(CMAKE_CROSSCOMPILING_EMULATOR /usr/lib/wine/wine64 cmd /c)

# Static runtime (libstdc++, libgcc, winpthread): a program needs no DLL beside it, under Wine
# or when copied to a Windows machine.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-static")
